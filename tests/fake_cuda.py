"""A CUDA driver that is not there: run ocbench's CUDA-only lines on this CPU machine.

No GPU has ever run this project's tests, so every line that runs only when `device.type == "cuda"`
would ship unrun (one did: `torch.cuda.set_device(torch.device("cuda"))`, which torch refuses in
Python before it reaches a driver, crashed every GPU run). `fake_cuda` executes those lines with a
CUDA `torch.device` and torch's own Python code live: `torch.cuda.set_device`, `get_rng_state`,
`mem_get_info`, `synchronize`, `device(...)`, `stream(...)`, `graph(...)` all run as torch wrote
them, with their argument checks. Only what needs a driver is replaced, as low as Python reaches:

- the entry points in `torch._C` that the wrappers call (`_cuda_getDeviceCount`, `_cuda_init`,
  `_cuda_setDevice`, `_cuda_exchangeDevice`, `_cuda_synchronize`, `_cuda_getCurrentStream`,
  `_cuda_setStream`, the runtime's `cudaMemGetInfo`, the device properties), answering as one
  driver with `devices` GPUs would and refusing an ordinal it does not have;
- the objects the driver itself makes, which Python cannot build without one: a CUDA
  `torch.Generator` (a CPU generator stands in, reporting its CUDA device), `Stream`, `Event` and
  `CUDAGraph` (they record what is asked of them in `driver.calls`);
- tensors on the GPU: an op that makes or reads a CUDA tensor (or pinned host memory) runs under
  `FakeTensorMode`, so a tensor "on cuda:0" has a shape, a dtype and a device, and torch's meta
  kernels check devices and shapes (a CPU tensor beside a CUDA one is refused as on a GPU), but it
  holds no values. CPU tensors stay real. Forwards work; `.item()` of a CUDA tensor and autograd's
  backward through one (which needs a device context from the driver) do not.

Usage: the `fake_cuda` fixture (tests/conftest.py), or `with fake_cuda(monkeypatch) as driver:`.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CUDA_TYPE = 1  # c10::DeviceType::CUDA, as torch._C._cuda_getCurrentStream reports it


@dataclass
class FakeDriver:
    devices: int = 1
    name: str = "NVIDIA H100 80GB HBM3"
    total_memory: int = 80 * 10**9
    free_memory: int = 79 * 10**9
    current: int = 0
    current_stream: dict = field(default_factory=dict)  # device index -> the stream id set on it
    calls: list = field(default_factory=list)  # (what, argument) in order: set_device, synchronize, ...
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def ordinal(self, index: int, what: str) -> int:
        """A device ordinal as the driver checks it (torch's wrappers pass it through)."""
        if not 0 <= index < self.devices:
            raise RuntimeError(f"CUDA error: invalid device ordinal ({what}({index}), {self.devices} GPU(s))")
        return index

    # torch._C's entry points --------------------------------------------------------------------
    def set_device(self, index: int) -> None:
        self.current = self.ordinal(index, "set_device")
        self.calls.append(("set_device", index))

    def exchange_device(self, index: int) -> int:
        previous = self.current
        if index >= 0:
            self.current = self.ordinal(index, "exchange_device")
        return previous

    def synchronize(self) -> None:
        self.calls.append(("synchronize", self.current))

    def stream_data(self, index: int, default: bool = False) -> tuple[int, int, int]:
        index = self.current if index is None or index < 0 else self.ordinal(index, "stream")
        return (0 if default else self.current_stream.get(index, 0), index, CUDA_TYPE)

    def set_stream(self, stream_id=0, device_index=0, device_type=CUDA_TYPE) -> None:
        self.current_stream[self.ordinal(device_index, "set_stream")] = stream_id
        self.calls.append(("set_stream", (stream_id, device_index)))

    def properties(self, index: int):
        return _Properties(self.name, self.total_memory, 9, 0, 132)

    def init(self) -> None:
        # what _cuda_init leaves behind: one default generator per device
        torch.cuda.default_generators = tuple(_real_generator() for _ in range(self.devices))
        self.calls.append(("init", self.devices))


@dataclass
class _Properties:
    name: str
    total_memory: int
    major: int
    minor: int
    multi_processor_count: int


_real_generator = torch.Generator


class _Generator(torch._C.Generator):
    """`torch.Generator(device)`: a CUDA one is made by the driver; a CPU generator stands in and
    reports its CUDA device (under FakeTensorMode its draws only give shapes)."""

    def __new__(cls, device="cpu"):
        device = torch.device(device)
        if device.type != "cuda":
            return super().__new__(cls, device)
        index = torch.cuda._utils._get_device_index(device, optional=True)  # torch's own check
        torch.cuda._lazy_init()
        driver = _ACTIVE[-1]
        self = super().__new__(cls)
        self._cuda = torch.device("cuda", driver.ordinal(index, "Generator"))
        return self

    @property
    def device(self):
        return getattr(self, "_cuda", None) or super().device


class _Event:
    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        self.recorded_on = None

    def record(self, stream=None):
        stream = stream or torch.cuda.current_stream()
        self.recorded_on = stream
        _ACTIVE[-1].calls.append(("event.record", stream.stream_id))

    def wait(self, stream=None):
        _ACTIVE[-1].calls.append(("event.wait", (stream or torch.cuda.current_stream()).stream_id))

    def synchronize(self):
        if self.recorded_on is None:
            return  # as CUDA: an event never recorded is complete
        _ACTIVE[-1].calls.append(("event.synchronize", self.recorded_on.stream_id))

    def query(self):
        return True


class _Stream:
    """torch.cuda.Stream's Python side as torch wrote it (the device context around creation), over
    a stream id from the fake driver instead of the driver's pool."""

    def __new__(cls, device=None, priority=0, **kwargs):
        self = super().__new__(cls)
        driver = _ACTIVE[-1]
        if "stream_id" in kwargs and "device_index" in kwargs:
            self.stream_id, self.device_index = kwargs["stream_id"], kwargs["device_index"]
        elif device is None:
            self.stream_id, self.device_index = next(driver._ids), driver.current
        else:
            with torch.cuda.device(device):
                self.stream_id, self.device_index = next(driver._ids), driver.current
        self.device_type, self.priority = CUDA_TYPE, priority
        return self

    @property
    def device(self):
        return torch.device("cuda", self.device_index)

    def wait_event(self, event):
        event.wait(self)

    def wait_stream(self, stream):
        self.wait_event(stream.record_event())

    def record_event(self, event=None):
        event = event or torch.cuda.Event()
        event.record(self)
        return event

    def synchronize(self):
        _ACTIVE[-1].calls.append(("stream.synchronize", self.stream_id))

    def query(self):
        return True

    def __eq__(self, other):
        return isinstance(other, _Stream) and (self.stream_id, self.device_index) == (other.stream_id, other.device_index)

    def __hash__(self):
        return hash((self.stream_id, self.device_index))


class _CUDAGraph:
    """Records capture and replay; capture must happen on a side stream, as the driver demands
    (capturing on the legacy default stream is an error there)."""

    def __init__(self, keep_graph=False):
        self.captured = self.capturing = False
        self.replays = 0

    def capture_begin(self, pool=None, capture_error_mode="global", **kwargs):
        stream = torch.cuda.current_stream()
        if stream.stream_id == 0:
            raise RuntimeError("CUDA graphs must be captured on a non-default stream")
        self.capturing = True
        _ACTIVE[-1].calls.append(("graph.capture_begin", stream.stream_id))

    def capture_end(self):
        self.capturing, self.captured = False, True
        _ACTIVE[-1].calls.append(("graph.capture_end", None))

    def replay(self):
        if not self.captured:
            raise RuntimeError("replay() of a graph that was never captured")
        self.replays += 1
        _ACTIVE[-1].calls.append(("graph.replay", None))

    def pool(self):
        return (0, 0)


class _NoDeviceFakeTensorMode(FakeTensorMode):
    # FakeTensorMode computes small constant tensors for real unless it believes no GPU is there
    # (torch.cuda.is_available(), which the fake driver answers True): tell it the truth
    avoid_device_init = True


class _CudaTensorsAreFake(TorchDispatchMode):
    """Sends every op that makes or touches a CUDA tensor (or pinned host memory, which needs the
    driver) to FakeTensorMode; the rest runs for real on the CPU."""

    def __init__(self):
        super().__init__()
        self.fake = _NoDeviceFakeTensorMode(allow_non_fake_inputs=True)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.needs_device(args, kwargs):
            with self.fake:
                return func(*args, **kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def needs_device(args, kwargs) -> bool:
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda" or kwargs.get("pin_memory"):
            return True
        flat, _ = tree_flatten((args, kwargs))
        return any(isinstance(x, FakeTensor) for x in flat)


_ACTIVE: list[FakeDriver] = []


@contextlib.contextmanager
def fake_cuda(monkeypatch, devices: int = 1, fake_tensors: bool = True, **settings):
    """A process in which CUDA has `devices` GPUs (see the module docstring). `settings`: the
    FakeDriver's name, total_memory, free_memory. With `fake_tensors` (default) CUDA tensors are
    fake ones; without it, only the driver is faked (for code that makes no CUDA tensor)."""
    driver = FakeDriver(devices=devices, **settings)
    C = torch._C
    for name, value in {
        "_cuda_getDeviceCount": lambda: driver.devices,
        "_cuda_init": driver.init,
        "_cuda_setDevice": driver.set_device,
        "_cuda_getDevice": lambda: driver.current,
        "_cuda_synchronize": driver.synchronize,
        "_cuda_getCurrentStream": driver.stream_data,
        "_cuda_getDefaultStream": lambda index: driver.stream_data(index, default=True),
        "_cuda_setStream": driver.set_stream,
        "_cuda_emptyCache": lambda: None,
        "_host_emptyCache": lambda: None,
    }.items():
        monkeypatch.setattr(C, name, value)
    cuda = torch.cuda
    # module-level aliases torch bound to torch._C's functions at import
    monkeypatch.setattr(cuda, "_exchange_device", driver.exchange_device)
    monkeypatch.setattr(cuda, "_maybe_exchange_device", driver.exchange_device)
    monkeypatch.setattr(cuda, "_get_device_properties", driver.properties, raising=False)
    monkeypatch.setattr(cuda, "_cudart", type("cudart", (), {
        "cudaMemGetInfo": staticmethod(lambda index: (driver.free_memory, driver.total_memory))}))
    # CUDA's state before initialisation, restored afterwards
    monkeypatch.setattr(cuda, "_initialized", False)
    monkeypatch.setattr(cuda, "_cached_device_count", None)
    monkeypatch.setattr(cuda, "_queued_calls", [])
    monkeypatch.setattr(cuda, "default_generators", ())
    # what the driver makes
    monkeypatch.setattr(torch, "Generator", _Generator)
    for module in (cuda, torch.cuda.streams):
        monkeypatch.setattr(module, "Stream", _Stream)
        monkeypatch.setattr(module, "Event", _Event)
    monkeypatch.setattr(cuda, "CUDAGraph", _CUDAGraph)
    monkeypatch.setattr(torch.cuda.graphs, "CUDAGraph", _CUDAGraph)
    monkeypatch.setattr(torch.cuda.graphs.graph, "default_capture_stream", None)
    _ACTIVE.append(driver)
    try:
        with _CudaTensorsAreFake() if fake_tensors else contextlib.nullcontext():
            yield driver
    finally:
        _ACTIVE.pop()
