#!/bin/bash
# Train on several GPU hosts without a cluster manager: run this once per host.
#
#   COORDINATOR=host0:12345 NUM_PROCESSES=2 PROCESS_ID=0 WORKDIR=/shared/dae DATA=/shared/data \
#     scripts/launch_multihost_gpu.sh configs/dae.py:variant=128 [--config.batch_size=128 ...]
#
# (Under SLURM or Open MPI leave COORDINATOR/NUM_PROCESSES/PROCESS_ID unset: jax.distributed detects
# them, e.g. `srun --ntasks-per-node=1 scripts/launch_multihost_gpu.sh ...`.)
# WORKDIR and DATA must be on a filesystem every host sees. The checkout needs `make install ACCEL=cuda12`
# (jax[cuda12]) first, once per checkout: hosts sharing one checkout must not all install into it at once.
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG [--config.field=value ...]}; shift
: "${WORKDIR:?set WORKDIR}" "${DATA:?set DATA}"
if [[ -n "${COORDINATOR:-}" ]]; then
  export JAX_COORDINATOR_ADDRESS=$COORDINATOR JAX_NUM_PROCESSES=${NUM_PROCESSES:?} JAX_PROCESS_ID=${PROCESS_ID:?}
fi
cd "$(dirname "$0")/.."
if [[ ! -f .venv/.installed-cuda12 ]]; then
  echo "$0: no GPU jaxlib in $PWD/.venv: run 'make install ACCEL=cuda12' here first" >&2
  exit 1
fi
TF_CPP_MIN_LOG_LEVEL=2 exec .venv/bin/python -m daetalker_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --config.data.data_dir="$DATA" --config.distributed=True "$@"
