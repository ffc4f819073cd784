"""A small ctypes binding to libespeak-ng: text -> (PCM, phoneme events).

The command-line `espeak-ng` can print phonemes but not *when* each one starts; the library's synth
callback reports every phoneme with its audio position, which is what the synthetic face needs to
open the mouth at the right frame. Only the few calls we use are bound (see espeak-ng's
`speak_lib.h`, API revision 12).

libespeak-ng keeps internal state that carries over from one utterance to the next: the same text
spoken twice in one process gives slightly different samples and phoneme times (measured with
espeak-ng 1.51; reseeding libc's rand() does not help, and re-initialising the library hangs).
A fresh process is reproducible, so `Speaker` runs a private engine in a child process (this file
run as a bare script, ~50 ms to start) for each sequence of utterances that must be reproducible,
e.g. one clip. `synthesize` uses the engine of the current process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import typing

if typing.TYPE_CHECKING:
  import numpy as np  # imported lazily: the Speaker child process runs without numpy

# espeak_AUDIO_OUTPUT
AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
# espeak_EVENT_TYPE
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8
# espeak_PARAMETER
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7
# espeak_Synth flags / position type
CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0

NATIVE_SAMPLE_RATE = 22050  # espeak-ng's output rate; the real value is returned by Initialize.


class _EventId(ctypes.Union):
  _fields_ = [('number', ctypes.c_int),
              ('name', ctypes.c_char_p),
              ('string', ctypes.c_char * 8)]  # phoneme mnemonic (UTF-8, not 0-terminated if 8 long)


class _Event(ctypes.Structure):
  _fields_ = [('type', ctypes.c_int),
              ('unique_identifier', ctypes.c_uint),
              ('text_position', ctypes.c_int),
              ('length', ctypes.c_int),
              ('audio_position', ctypes.c_int),  # milliseconds from the start of the message
              ('sample', ctypes.c_int),
              ('user_data', ctypes.c_void_p),
              ('id', _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class Phoneme:
  """One phoneme event: espeak mnemonic (e.g. 'aI', 'p', '_:') starting at `start_ms`."""
  name: str
  start_ms: int


@dataclasses.dataclass
class Utterance:
  """Synthesised speech: int16 PCM at `sample_rate` and its phoneme events in time order."""
  audio: np.ndarray  # (S,) int16
  sample_rate: int
  phonemes: list[Phoneme]
  words_ms: list[int]  # start time of every word


class _Engine:
  """The process-wide libespeak-ng instance (lazily initialised)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._lib = None
    self._rate = NATIVE_SAMPLE_RATE
    self._chunks: list[bytes] = []
    self._events: list[tuple[int, int, str]] = []
    self._callback = _CALLBACK(self._on_synth)  # kept alive as long as the engine

  def _load(self):
    if self._lib is not None:
      return
    name = ctypes.util.find_library('espeak-ng') or 'libespeak-ng.so.1'
    try:
      lib = ctypes.CDLL(name)
    except OSError as e:
      raise RuntimeError(f'libespeak-ng not found ({name}): install the espeak-ng package') from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                 INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
    if rate <= 0:
      raise RuntimeError(f'espeak_Initialize failed (returned {rate}): '
                         'is espeak-ng-data installed?')
    lib.espeak_SetSynthCallback(self._callback)
    self._rate = rate
    self._lib = lib

  def _on_synth(self, wav, num_samples, events) -> int:
    if num_samples > 0 and wav:
      self._chunks.append(ctypes.string_at(wav, 2 * num_samples))  # native-endian int16
    i = 0
    while events[i].type != EVENT_LIST_TERMINATED:
      ev = events[i]
      if ev.type == EVENT_PHONEME:
        raw = bytes(ev.id.string).split(b'\0', 1)[0]
        self._events.append((EVENT_PHONEME, ev.audio_position, raw.decode('utf-8', 'replace')))
      elif ev.type == EVENT_WORD:
        self._events.append((EVENT_WORD, ev.audio_position, ''))
      i += 1
    return 0  # 0 = continue synthesis

  def synthesize(self, text: str, *, voice: str = 'en', rate: int = 175, pitch: int = 50,
                 pitch_range: int = 50) -> tuple[bytes, int, list[Phoneme], list[int]]:
    """-> (int16 samples as bytes, sample rate, phonemes, word start times)."""
    with self._lock:
      self._load()
      lib = self._lib
      if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
        raise ValueError(f'espeak-ng: unknown voice {voice!r}')
      for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range),
                           (PARAM_VOLUME, 100), (PARAM_WORDGAP, 0)):
        lib.espeak_SetParameter(param, int(value), 0)
      self._chunks, self._events = [], []
      buf = ctypes.create_string_buffer(text.encode('utf-8'))
      err = lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
      if err != EE_OK:
        raise RuntimeError(f'espeak_Synth failed with error {err} for text {text[:40]!r}')
      lib.espeak_Synchronize()
      audio = b''.join(self._chunks)
      events, self._chunks, self._events = self._events, [], []
    phonemes = [Phoneme(name, ms) for kind, ms, name in events if kind == EVENT_PHONEME]
    words = [ms for kind, ms, _ in events if kind == EVENT_WORD]
    return audio, self._rate, phonemes, words


_ENGINE = _Engine()


def synthesize(text: str, *, voice: str = 'en', rate: int = 175, pitch: int = 50,
               pitch_range: int = 50) -> Utterance:
  """Speaks `text` with libespeak-ng; returns PCM at the native rate and timed phoneme events.

  Args:
    text: plain UTF-8 text (no SSML).
    voice: an espeak-ng voice name, optionally with a variant ('en', 'en-us', 'en+f3').
    rate: words per minute (80..450).
    pitch: base pitch 0..100.
    pitch_range: pitch variation 0..100.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top,redefined-outer-name
  audio, sample_rate, phonemes, words = _ENGINE.synthesize(text, voice=voice, rate=rate,
                                                           pitch=pitch, pitch_range=pitch_range)
  return Utterance(audio=np.frombuffer(audio, np.int16).copy(), sample_rate=sample_rate,
                   phonemes=phonemes, words_ms=words)


class Speaker:
  """A private libespeak-ng engine in a fresh child process: reproducible utterance sequences.

  The same sequence of `synthesize` calls on a new Speaker gives identical samples and events, in
  any process and whatever was spoken before elsewhere. Use as a context manager.
  """

  def __init__(self):
    # -S -E: a bare interpreter (no site-packages) starts in ~50 ms; the child needs only ctypes.
    self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: chatter cannot block the child
    self._proc = subprocess.Popen([sys.executable, '-S', '-E', __file__, '--serve'],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self._stderr)

  def _died(self, why) -> RuntimeError:
    self._proc.kill()
    self._proc.wait()
    self._stderr.seek(0)
    err = self._stderr.read().decode(errors='replace').strip()[-500:]
    return RuntimeError(f'espeak-ng worker died: {err or why}')

  def synthesize(self, text: str, *, voice: str = 'en', rate: int = 175, pitch: int = 50,
                 pitch_range: int = 50) -> Utterance:
    """Like the module's `synthesize`, in this Speaker's engine."""
    request = {'text': text, 'voice': voice, 'rate': int(rate), 'pitch': int(pitch),
               'range': int(pitch_range)}
    try:
      self._proc.stdin.write(json.dumps(request).encode() + b'\n')
      self._proc.stdin.flush()
      reply = json.loads(self._proc.stdout.readline())
    except (BrokenPipeError, ValueError) as e:
      raise self._died(e) from e
    if reply.get('error'):
      raise ValueError(reply['error'])
    payload = self._proc.stdout.read(2 * reply['samples'])
    if len(payload) != 2 * reply['samples']:
      raise self._died('truncated audio')
    import numpy as np  # pylint: disable=g-import-not-at-top,redefined-outer-name
    audio = np.frombuffer(payload, np.int16).copy()
    phonemes = [Phoneme(n, ms) for n, ms in reply['phonemes']]
    return Utterance(audio=audio, sample_rate=reply['rate'], phonemes=phonemes,
                     words_ms=reply['words'])

  def close(self) -> None:
    if self._proc.poll() is None:
      self._proc.stdin.close()
      self._proc.wait()
    self._proc.stdout.close()
    self._stderr.close()

  def __enter__(self) -> 'Speaker':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _serve() -> None:
  """Child side of `Speaker`: one JSON request per line -> JSON header line + int16 samples."""
  out = sys.stdout.buffer
  for line in sys.stdin.buffer:
    req = json.loads(line)
    try:
      payload, rate, phonemes, words = _ENGINE.synthesize(
          req['text'], voice=req['voice'], rate=req['rate'], pitch=req['pitch'],
          pitch_range=req['range'])
      header = {'rate': rate, 'samples': len(payload) // 2, 'words': words,
                'phonemes': [[p.name, p.start_ms] for p in phonemes]}
    except (ValueError, RuntimeError) as e:
      header, payload = {'error': str(e)}, b''
    out.write(json.dumps(header).encode() + b'\n' + payload)
    out.flush()


if __name__ == '__main__' and sys.argv[1:] == ['--serve']:
  _serve()
