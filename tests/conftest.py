"""Test setup: CPU only, 8 fake XLA devices for sharding tests, TensorFlow kept off any GPU, and one persistent
JAX compilation cache for the whole run.

The environment must be set before JAX or TensorFlow is imported, so it happens at the top of this file.

The compilation cache: every test that builds its own jit of a program another test already compiled (a codec,
a pipeline, a train step, a subprocess of `daetalker_jax.main`) loads the executable instead of compiling it
again. It lives in a fresh temporary folder that the run removes at its end, unless JAX_COMPILATION_CACHE_DIR
names one (then it is kept, and a second run reuses it). Under pytest-xdist the workers inherit the folder
from the controller, so they share it too, and the session fixtures below are built once for all workers.
"""
import fcntl
import os
import shutil
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()
_OWN_CACHE = None
if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
  _OWN_CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='daetalker_jax_test_cache_')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')   # every program, however quick
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

import pathlib  # noqa: E402

import pytest  # noqa: E402

from tests import _reference  # noqa: E402


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, 'workerinput'):     # the process that made it (not an xdist worker)
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# ----------------------------------------------------------------------------------------- pytest-xdist groups
# `--dist loadgroup` runs the tests of one xdist_group on one worker. pytest-xdist 3.8 marks a grouped test by
# appending '@group' to Item._nodeid, which pytest 9 no longer reads (Node.nodeid comes from Node._id), so its
# loadgroup silently becomes plain `load`: a module's expensive fixtures were built on both workers. The
# scheduler below groups by the same markers, read from the test files' source (the controller process collects
# nothing itself): a module's `pytestmark = pytest.mark.xdist_group(NAME)` and a test function's
# `@pytest.mark.xdist_group(NAME)` decorator.
def _xdist_group_name(call) -> str | None:
  import ast  # pylint: disable=g-import-not-at-top
  if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == 'xdist_group'
      and call.args and isinstance(call.args[0], ast.Constant)):
    return str(call.args[0].value)
  return None


_GROUPS: dict[str, dict[str, str]] = {}


def _groups_of_file(path: str) -> dict[str, str]:
  """{test function name or '*' (the whole module): group} of one test file."""
  import ast  # pylint: disable=g-import-not-at-top
  if path not in _GROUPS:
    groups = {}
    try:
      tree = ast.parse(pathlib.Path(path).read_text())
    except (OSError, SyntaxError):
      tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
      if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'pytestmark' for t in node.targets):
        name = _xdist_group_name(node.value)
        if name:
          groups['*'] = name
      elif isinstance(node, ast.FunctionDef):
        for decorator in node.decorator_list:
          name = _xdist_group_name(decorator)
          if name:
            groups[node.name] = name
    _GROUPS[path] = groups
  return _GROUPS[path]


# The longest work units, started first so that neither worker is left with one of them at the end: the groups
# that train models in their fixtures, and test_train's subprocess runs (each a unit of its own).
_START_FIRST = ('group:landmark', 'group:difftalk', 'group:train_full_run', 'tests/test_train.py::',
                'group:demo_generic', 'group:vq', 'group:inference', 'group:evaluate')


def pytest_xdist_make_scheduler(config, log):
  if config.getvalue('dist') != 'loadgroup':
    return None
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class MarkedGroupScheduling(LoadScopeScheduling):
    """One work unit per xdist_group, every other test a unit of its own; _START_FIRST's first, then the
    largest groups."""

    def _split_scope(self, nodeid: str) -> str:
      path, _, rest = nodeid.partition('::')
      groups = _groups_of_file(str(config.rootpath / path))
      name = groups.get(rest.split('[')[0]) or groups.get('*')
      return f'group:{name}' if name else nodeid

    def _assign_work_unit(self, node) -> None:
      if not getattr(self, '_reordered', False):
        self._reordered = True
        first = [s for prefix in _START_FIRST for s in self.workqueue if s.startswith(prefix)]
        for scope in reversed(list(dict.fromkeys(first))):
          self.workqueue.move_to_end(scope, last=False)
      super()._assign_work_unit(node)
  return MarkedGroupScheduling(config, log)


def shared_dir(tmp_path_factory, name: str, build) -> pathlib.Path:
  """A folder filled once per test run by `build(folder)`.

  Alone, `build` fills a fresh temporary folder. Under pytest-xdist the first worker to ask builds it in the
  run's shared temporary root while the others wait on a lock, then all of them read the same folder.
  """
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    folder = tmp_path_factory.mktemp(name)
    build(folder)
    return folder
  root = tmp_path_factory.getbasetemp().parent          # pytest-of-<user>/pytest-<n>: shared by the workers
  folder, done = root / f'shared_{name}', root / f'shared_{name}.done'
  with open(root / f'shared_{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)                  # a worker that failed half way
      folder.mkdir()
      build(folder)
      done.touch()
  return folder


@pytest.fixture(scope='session')
def reference_dir() -> pathlib.Path:
  """The official diffae reference vectors, kept in the repository (tests/reference/diffae, see its README)."""
  return _reference.REFERENCE


@pytest.fixture(scope='session')
def tiny_weights(tmp_path_factory) -> pathlib.Path:
  """The official tiny diffae model's weights as a .safetensors file, rebuilt from their seeded recipe."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp('diffae') / 'tiny_weights.safetensors'
  save_file(_reference.rebuild_tiny_weights(), str(path))
  return path


@pytest.fixture(scope='session')
def synth_videos(tmp_path_factory) -> pathlib.Path:
  """Six 3-second synthface clips at 64 px (real mp4 files with h264 video and AAC audio)."""
  from data_prep import synthface  # pylint: disable=g-import-not-at-top
  build = lambda folder: synthface.generate_dataset(folder / 'videos', clips=6, seconds=3.0, size=64, seed=0,
                                                    workers=2)
  return shared_dir(tmp_path_factory, 'synth', build) / 'videos'


@pytest.fixture(scope='session')
def tiny_dataset(synth_videos, tmp_path_factory) -> pathlib.Path:
  """The synthface clips ingested by the real `data_prep.prepare` at 32 px (4 train / 1 val / 1 test)."""
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  build = lambda folder: prepare.prepare(synth_videos, folder / 'tiny', size=32, crop='none', val_fraction=0.17,
                                         test_fraction=0.17, seed=0)
  return shared_dir(tmp_path_factory, 'data', build) / 'tiny'


@pytest.fixture(scope='session')
def tiny_dae_workdir(tiny_dataset, tmp_path_factory) -> pathlib.Path:
  """A tiny DAE trained for 2 steps by the real loop on `tiny_dataset` (a real checkpoint)."""
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  config = dae_config.get_config('variant=tiny')
  config.data.data_dir = str(tiny_dataset)
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0              # no evaluation (its tests train their own)
  config.log_every_steps = 1
  return shared_dir(tmp_path_factory, 'dae', lambda folder: train.train_and_evaluate(config, str(folder)))


@pytest.fixture(scope='session')
def tiny_latents(tiny_dae_workdir, tiny_dataset, tmp_path_factory) -> str:
  """Latents of every frame of `tiny_dataset` from `tiny_dae_workdir`, under the name 'dae'."""
  from daetalker_jax import extract  # pylint: disable=g-import-not-at-top
  shared_dir(tmp_path_factory, 'latents_done',
             lambda _: extract.extract_latents(str(tiny_dae_workdir), str(tiny_dataset), name='dae', batch_size=16))
  return 'dae'


@pytest.fixture(scope='session')
def tiny_autoencoder(tiny_dataset, tmp_path_factory) -> pathlib.Path:
  """A tiny VQ autoencoder trained for 8 steps by the real loop on `tiny_dataset`, its mouth box weighted 5x
  (as the landmark demo's first stage), evaluated at its last step: test_vq reads its training, test_difftalk
  freezes it as DiffTalk's first stage."""
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  config = ae_config.get_config('variant=tiny')
  config.data.data_dir = str(tiny_dataset)
  config.num_train_steps = 8
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 2
  config.checkpoint_every_steps = 8
  config.eval_every_steps = 8
  config.log_every_steps = 1
  config.loss.mouth_weight = 5.0   # batches carry the mouth box
  return shared_dir(tmp_path_factory, 'autoencoder', lambda folder: train.train_and_evaluate(config, str(folder)))


@pytest.fixture(scope='session')
def official_cfg(reference_dir) -> dict:
  """BeatGANsAutoencConfig of the reference tiny diffae model."""
  import json  # pylint: disable=g-import-not-at-top
  return json.loads((reference_dir / 'tiny_config.json').read_text())['BeatGANsAutoencConfig']


@pytest.fixture(scope='session')
def tiny(tiny_weights, official_cfg):
  """The official tiny diffae model's weights imported into our DiffusionAutoencoder."""
  from daetalker_jax.importers import diffae  # pylint: disable=g-import-not-at-top
  return diffae.load_pretrained(tiny_weights, diffae.config_from_official(official_cfg))
