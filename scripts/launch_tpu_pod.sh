#!/bin/bash
# Train the DAE on a Cloud TPU pod slice (every host runs the same command; JAX finds its peers).
#
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=gs://bucket/dae DATA=gs://bucket/data \
#     scripts/launch_tpu_pod.sh configs/dae.py:variant=256 [--config.batch_size=256 ...]
#
# WORKDIR and DATA must be readable/writable by every host (GCS bucket or a shared filesystem): orbax
# writes one checkpoint from all hosts together, TensorBoard events come from host 0 only.
# The repository must already be checked out at $REPO on every host. Each host first runs
# `make install ACCEL=tpu` (jax[tpu] + libtpu; a no-op once done); INSTALL=0 skips it.
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG [--config.field=value ...]}; shift
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}" "${DATA:?set DATA}"
REPO=${REPO:-~/daetalker_jax}
EXTRA=$(printf ' %q' "$@")
INSTALL_CMD="make install ACCEL=tpu &&"
[[ "${INSTALL:-1}" == 0 ]] && INSTALL_CMD=""
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd $REPO && $INSTALL_CMD TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m daetalker_jax.main \
    --config=$CONFIG --workdir=$WORKDIR --config.data.data_dir=$DATA \
    --config.distributed=True $EXTRA 2>&1 | tee -a /tmp/daetalker_train.log"
