"""Where a sweep's work units run: the executor that ``run``'s options choose
(local worker, one per device, Ray, in process), checked together before
anything is written, and the modules its workers must import."""

from __future__ import annotations

from dataclasses import dataclass, field

from attnbench.bench.executors.base import Executor, InProcessExecutor, LocalPoolExecutor
from attnbench.bench.rundir import RunOptions
from attnbench.errors import AttnbenchError
from attnbench.suite.load import Suite
from attnbench.variants.registry import registered


def make_executor(suite: Suite, options: RunOptions) -> Executor:
    preload = options.preload + preload_modules(suite)
    if options.in_process:
        return InProcessExecutor()
    if options.executor == "ray":
        from attnbench.bench.executors.ray_executor import RayExecutor

        return RayExecutor(preload, address=options.address, device_kind=_device_kind(suite))
    if options.devices:
        from attnbench.bench.executors.devices import DevicePoolExecutor

        return DevicePoolExecutor(options.devices, preload, allow_shared_cpu=options.allow_shared_cpu)
    return LocalPoolExecutor(preload)


def _device_kind(suite: Suite) -> str:
    kinds = {("cuda" if c.device.startswith("cuda") else c.device) for c in suite.cases()}
    if len(kinds) > 1:
        raise AttnbenchError(f"{suite.path}: the suite mixes devices ({', '.join(sorted(kinds))}); a cluster run "
                             "takes one kind: give --device cuda or --device cpu")
    return kinds.pop() if kinds else "cpu"


def preload_modules(suite: Suite) -> list[str]:
    """Modules a worker must import to know the suite's variants that were
    registered outside attnbench (by a test, a script or a plugin)."""
    variants = registered()
    modules = []
    for spec in suite.variants:
        entry = variants.get(spec.name)
        module = getattr(entry.target, "__module__", "") if entry else ""
        if module and module != "__main__" and not module.startswith("attnbench.variants"):
            modules.append(module)
    return sorted(set(modules))


@dataclass
class Spread:
    """How ``run``'s options spread the cases: the devices of --devices, the
    device kind they impose on the suite, and the options to repeat on resume."""

    devices: list[str] | None = None
    device: str | None = None
    args: list[str] = field(default_factory=list)


def spread_options(executor: str = "local", address: str | None = None, devices: str | None = None,
                   allow_shared_cpu: bool = False, in_process: bool = False, device: str | None = None) -> Spread:
    """Check --executor, --address, --devices and --allow-shared-cpu together."""
    if executor not in ("local", "ray"):
        raise AttnbenchError(f"--executor {executor!r}: choose local or ray")
    if address is not None and executor != "ray":
        raise AttnbenchError("--address is the Ray cluster to join: use it with --executor ray")
    if executor == "ray":
        if in_process or devices:
            raise AttnbenchError("--executor ray places every unit itself: drop "
                                 + ("--in-process" if in_process else "--devices"))
        from attnbench.bench.executors.ray_executor import import_ray

        import_ray()  # missing: a clear message now, before anything is written
        return Spread(args=["--executor", "ray"] + (["--address", address] if address else []))
    if devices is None:
        if allow_shared_cpu:
            raise AttnbenchError("--allow-shared-cpu goes with --devices cpu,cpu,... (several CPU workers)")
        return Spread()
    if in_process:
        raise AttnbenchError("--devices runs a worker per device: it cannot be combined with --in-process")
    from attnbench.bench.executors.devices import device_kind, parse_devices

    chosen = parse_devices(devices)
    kind = device_kind(chosen)
    if device is not None and not device.startswith(kind):
        raise AttnbenchError(f"--device {device} and --devices {devices} disagree; --devices alone is enough")
    args = ["--devices", devices] + (["--allow-shared-cpu"] if allow_shared_cpu else [])
    return Spread(devices=chosen, device=kind, args=args)
