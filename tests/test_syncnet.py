"""SyncNet: layer-by-layer parity with the public PyTorch model, the importer, and the LSE procedure."""

import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from daetalker_jax import eval_metrics
from daetalker_jax.data import contract
from daetalker_jax.importers import syncnet as syncnet_import
from daetalker_jax.models import syncnet as syncnet_lib


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('syncnet')


class TorchSyncNetS(nn.Module):
  """A faithful copy of joonson/syncnet_python `SyncNetModel.S` (layer list and forward passes)."""

  def __init__(self, num_layers_in_fc_layers=1024):
    super().__init__()
    self.netcnnaud = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
        nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(192), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
        nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(384), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
        nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
    )
    self.netfcaud = nn.Sequential(
        nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers))
    self.netfclip = nn.Sequential(
        nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers))
    self.netcnnlip = nn.Sequential(
        nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
        nn.BatchNorm3d(96), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(inplace=True),
    )

  def forward_aud(self, x):
    mid = self.netcnnaud(x)
    return self.netfcaud(mid.view((mid.size()[0], -1)))

  def forward_lip(self, x):
    mid = self.netcnnlip(x)
    return self.netfclip(mid.view((mid.size()[0], -1)))


def make_reference_model(seed=0) -> TorchSyncNetS:
  """Random weights and random BatchNorm running statistics of a realistic scale.

  The running statistics are first measured on random inputs (so activations stay O(1) through the
  stack, as in a trained network; otherwise raw 0..255 pixels make them explode and a 1e-4 absolute
  tolerance would be meaningless), then perturbed randomly so that no BN layer is an identity.
  """
  torch.manual_seed(seed)
  m = TorchSyncNetS()
  for mod in m.modules():
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
      mod.momentum = None        # cumulative average: one train-mode pass sets the statistics.
  m.train()
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    m.forward_aud(torch.randn(4, 1, 13, 20, generator=g) * 10)
    m.forward_lip(torch.rand(3, 3, 5, 224, 224, generator=g) * 255)
    for mod in m.modules():
      if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        c = mod.num_features
        mod.running_mean.add_(0.1 * torch.randn(c, generator=g) * mod.running_var.sqrt())
        mod.running_var.mul_(0.5 + torch.rand(c, generator=g)).add_(1e-2)
        mod.weight.copy_(0.5 + torch.rand(c, generator=g))
        mod.bias.copy_(0.1 * torch.randn(c, generator=g))
  return m.eval()


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  model = make_reference_model()
  path = tmp_path_factory.mktemp('syncnet') / 'syncnet_v2.model'
  torch.save(model.state_dict(), path)
  return model, path


def test_layer_indices_match_pytorch(reference):
  torch_model, _ = reference
  flax_model = nnx.eval_shape(lambda: syncnet_lib.SyncNet(rngs=nnx.Rngs(0)))
  for stream in ('netcnnaud', 'netfcaud', 'netfclip', 'netcnnlip'):
    assert len(getattr(flax_model, stream)) == len(getattr(torch_model, stream)), stream


def test_import_and_parity(reference):
  torch_model, path = reference
  model = syncnet_import.load_syncnet_weights(path)
  rng = np.random.default_rng(0)
  mfcc = (rng.normal(size=(2, 1, 13, 20)) * 10).astype(np.float32)          # NCHW as PyTorch takes it
  lips = rng.uniform(0, 255, size=(2, 3, 5, 224, 224)).astype(np.float32)    # NCDHW
  with torch.no_grad():
    ref_a = torch_model.forward_aud(torch.from_numpy(mfcc)).numpy()
    ref_v = torch_model.forward_lip(torch.from_numpy(lips)).numpy()
  got_a = np.asarray(model.forward_aud(mfcc.transpose(0, 2, 3, 1)))
  got_v = np.asarray(model.forward_lip(lips.transpose(0, 2, 3, 4, 1)))
  assert got_a.shape == got_v.shape == (2, 1024)
  # The embeddings must be far from trivial for the comparison to mean anything.
  assert np.abs(ref_a).max() > 0.1 and np.abs(ref_v).max() > 0.1
  err_a, err_v = np.abs(got_a - ref_a).max(), np.abs(got_v - ref_v).max()
  print(f'SyncNet parity: audio max|err| {err_a:.2e} (max|ref| {np.abs(ref_a).max():.2f}), '
        f'lip max|err| {err_v:.2e} (max|ref| {np.abs(ref_v).max():.2f})')
  assert err_a <= 1e-4 and err_v <= 1e-4


def test_import_errors(tmp_path, reference):
  _, path = reference
  with pytest.raises(FileNotFoundError, match='not found'):
    syncnet_import.load_syncnet_weights(tmp_path / 'missing.model')
  junk = tmp_path / 'junk.model'
  junk.write_bytes(b'this is not a checkpoint')
  with pytest.raises(ValueError, match='junk.model: not a PyTorch state_dict'):
    syncnet_import.load_syncnet_weights(junk)
  other = tmp_path / 'other.model'
  torch.save({'encoder.weight': torch.zeros(3)}, other)
  with pytest.raises(ValueError, match='not a SyncNet'):
    syncnet_import.load_syncnet_weights(other)
  state = torch.load(path, weights_only=True)
  state['netcnnaud.0.weight'] = torch.zeros(64, 1, 5, 5)
  bad = tmp_path / 'bad_shape.model'
  torch.save(state, bad)
  with pytest.raises(ValueError, match=r'netcnnaud.0.weight has shape'):
    syncnet_import.load_syncnet_weights(bad)


def test_load_syncnet_without_weights():
  model, reason = eval_metrics.load_syncnet(None)
  assert model is None and 'no SyncNet weights' in reason
  model, reason = eval_metrics.load_syncnet('/nonexistent/syncnet_v2.model')
  assert model is None and 'not found' in reason


def torch_evaluate(torch_model, frames_bgr_224, audio_int16, vshift=15, batch_size=20):
  """`SyncNetInstance.evaluate` from its "Load video" step on, in PyTorch (MFCC from our numpy copy,
  which test_eval_metrics checks against python_speech_features)."""
  im = np.transpose(frames_bgr_224[None], (0, 4, 1, 2, 3))             # (1, 3, N, 224, 224)
  imtv = torch.from_numpy(im.astype(float)).float()
  mfcc = eval_metrics.mfcc(audio_int16, 16000).T                       # (13, F)
  cct = torch.from_numpy(mfcc[None, None].astype(float)).float()
  min_length = min(frames_bgr_224.shape[0], len(audio_int16) // 640)
  lastframe = min_length - 5
  im_feat, cc_feat = [], []
  with torch.no_grad():
    for i in range(0, lastframe, batch_size):
      frames = range(i, min(lastframe, i + batch_size))
      im_feat.append(torch_model.forward_lip(torch.cat([imtv[:, :, f:f + 5] for f in frames], 0)))
      cc_feat.append(torch_model.forward_aud(torch.cat([cct[:, :, :, f * 4:f * 4 + 20] for f in frames], 0)))
  im_feat, cc_feat = torch.cat(im_feat, 0), torch.cat(cc_feat, 0)
  feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
  dists = [torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(2 * vshift + 1, 1),
                                                 feat2p[i:i + 2 * vshift + 1, :]) for i in range(len(im_feat))]
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  return dict(offset=vshift - int(minidx), lse_d=float(minval), lse_c=float(torch.median(mdist) - minval),
              mdist=mdist.numpy(), im_feat=im_feat.numpy(), cc_feat=cc_feat.numpy())


def test_sync_scores_matches_script(reference):
  """sync_scores on a tiny clip (11 frames of 64 px crops) equals the script's procedure in PyTorch.

  6 windows only (CPU time), so the offset range is cut to +-2 (vshift 2): with the script's 15, most
  offsets would compare against the zero padding only and the comparison would say little.
  """
  import cv2

  torch_model, path = reference
  model, reason = eval_metrics.load_syncnet(path)
  assert model is not None and reason == ''
  rng = np.random.default_rng(0)
  n = 11
  frames = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
  t = np.arange(n * 640) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 4 * t) > 0)
           + 0.01 * rng.normal(size=t.size)).astype(np.float32)
  bgr = np.stack([cv2.resize(f, (224, 224))[..., ::-1] for f in frames])
  audio16 = contract.float_to_int16(audio)
  want = torch_evaluate(torch_model, bgr, audio16, vshift=2)

  im_feat, cc_feat = eval_metrics.syncnet_embeddings(frames, audio, model, batch_size=4)  # 2 batches, 1 padded
  assert im_feat.shape == cc_feat.shape == (6, 1024)
  err_v = np.abs(im_feat - want['im_feat']).max()
  err_a = np.abs(cc_feat - want['cc_feat']).max()
  print(f'sync_scores embeddings: lip max|err| {err_v:.2e}, audio max|err| {err_a:.2e}')
  assert err_v <= 1e-4 and err_a <= 1e-4

  got = eval_metrics.sync_scores(frames, audio, model, vshift=2, batch_size=4)
  print(f'sync_scores: {got}  script: { {k: want[k] for k in ("offset", "lse_d", "lse_c")} }')
  assert set(got) == {'lse_c', 'lse_d', 'offset'}
  assert got['lse_d'] == pytest.approx(want['lse_d'], abs=1e-4)
  assert got['lse_c'] == pytest.approx(want['lse_c'], abs=1e-4)
  assert want['lse_c'] > 1e-3              # a real minimum, so the offsets must agree
  assert got['offset'] == want['offset']


def test_sync_scores_input_errors(reference):
  _, path = reference
  model = syncnet_import.load_syncnet_weights(path)
  with pytest.raises(ValueError, match='uint8'):
    eval_metrics.sync_scores(np.zeros((8, 32, 32, 3), np.float32), np.zeros(8 * 640, np.float32), model)
  with pytest.raises(ValueError, match='at least 6 frames'):
    eval_metrics.sync_scores(np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5 * 640, np.float32), model)
