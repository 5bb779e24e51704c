"""tb.qemu.rings.RingChecker: the golden model on rings it did not see being filled, checking
every request a device announces through ``used->idx``.

The rings are laid out by :mod:`tests.test_model_blk`'s hand-made driver in a bytearray; the
"device" is a second golden model whose writes go through the checker's hook first, as the
co-simulation's DMA writes do. A faithful device gives no mismatch; a device that gets a status,
a data byte, a used length or the head wrong is caught, each on its own.
"""

import logging

import pytest

from model import regmap as rm
from model.blk import BlkProcessor
from model.device import VirtioBlkModel
from tb.qemu.rings import RingChecker
from tests.test_model_blk import (Driver, Memory, PARAMS, FEATURES, FEATURES_EI, T_IN, T_OUT,
                                  T_FLUSH, pattern)


class HookedMemory:
    """The device's view of memory: each write passes the checker first (as the bridge's
    ``before_write``), then lands; ``corrupt(addr, data)`` may change what lands."""
    def __init__(self, mem, checker, corrupt=None):
        self.mem, self.checker, self.corrupt = mem, checker, corrupt

    def read(self, addr, n):
        return self.mem.read(addr, n)

    def write(self, addr, data):
        data = bytes(data)
        if self.corrupt:
            data = self.corrupt(addr, data)
        self.checker.before_write(addr, data, lambda i: True)
        self.mem.write(addr, data)


def _bench(features, corrupt=None):
    mem = Memory(1 << 21)
    drv = Driver(mem, size=16)
    model = VirtioBlkModel(PARAMS)
    model.queues[0] = drv.queue
    model.driver_features = features
    model.device_status = rm.STATUS_ACKNOWLEDGE | rm.STATUS_DRIVER | \
        rm.STATUS_FEATURES_OK | rm.STATUS_DRIVER_OK
    errors = []
    checker = RingChecker(model, mem, errors.append, logging.getLogger("test"))
    device = BlkProcessor(PARAMS)
    image = pattern(len(device.disk), seed=3)
    device.disk[:] = image
    model.blk.disk[:] = image
    dev_mem = HookedMemory(mem, checker, corrupt)
    return mem, drv, model, checker, device, dev_mem, errors


def _workload(drv, checker, device, dev_mem, features, n=40):
    """Requests in bursts; the model serves at each notification, the device later."""
    k = 0
    while k < n:
        burst = min(1 + k % 5, n - k)
        for j in range(burst):
            i = k + j
            if i % 3 == 0:
                drv.request(T_OUT, sector=i, data=pattern(1024, seed=i), in_len=1)
            elif i % 3 == 1:
                drv.request(T_IN, sector=i - 1, in_len=1024 + 1, in_split=[512, 513])
            else:
                drv.request(T_FLUSH, in_len=1)
        checker.serve_all()                     # the notification
        device.process(0, dev_mem, drv.queue, features)
        k += burst


@pytest.mark.parametrize("features", [FEATURES, FEATURES_EI], ids=["plain", "event_idx"])
def test_faithful_device_matches(features):
    mem, drv, model, checker, device, dev_mem, errors = _bench(features)
    _workload(drv, checker, device, dev_mem, features)
    assert errors == [] and checker.mismatches == 0
    assert checker.compared == 40 and checker.per_queue[0] == 40
    assert checker.finish(bytes(device.disk)) == []


def test_served_late_still_compared():
    """No notification reaches the model (the guest suppressed it): the device's announcement
    makes the model serve."""
    mem, drv, model, checker, device, dev_mem, errors = _bench(FEATURES)
    drv.request(T_IN, sector=5, in_len=513)
    device.process(0, dev_mem, drv.queue, FEATURES)
    assert errors == [] and checker.compared == 1


def _flip_at(target):
    def corrupt(addr, data):
        if addr <= target() < addr + len(data):
            b = bytearray(data)
            b[target() - addr] ^= 1
            return bytes(b)
        return data
    return corrupt


@pytest.mark.parametrize("what", ["status", "data", "used_len", "head"])
def test_wrong_device_is_caught(what):
    box = {}
    mem = None

    def target():
        drv = box["drv"]
        elem = drv.queue.device + 4                        # used element 0: id, then len
        return {"status": box["req"].status_addr(), "data": box["req"].in_pieces[0][0] + 100,
                "used_len": elem + 4, "head": elem}[what]
    mem, drv, model, checker, device, dev_mem, errors = _bench(FEATURES, _flip_at(target))
    box["drv"] = drv
    box["req"] = drv.request(T_IN, sector=2, in_len=513)
    checker.serve_all()
    device.process(0, dev_mem, drv.queue, FEATURES)
    assert checker.compared == 1 and checker.mismatches == 1, errors
    assert len(errors) == 1 and {"status": "status at", "data": "data at",
                                 "used_len": "used len", "head": "head"}[what] in errors[0]


def test_disk_difference_is_caught():
    mem, drv, model, checker, device, dev_mem, errors = _bench(FEATURES)
    _workload(drv, checker, device, dev_mem, FEATURES, n=6)
    disk = bytearray(device.disk)
    disk[7] ^= 0x80
    assert "sector 0" in checker.finish(bytes(disk))[0]


def test_announcement_beyond_the_model_is_caught():
    """used->idx moved with nothing available: the device completed what the guest never
    made available."""
    mem, drv, model, checker, device, dev_mem, errors = _bench(FEATURES)
    dev_mem.write(drv.queue.device + 2, (1).to_bytes(2, "little"))
    assert checker.mismatches == 1 and "no request" in errors[0]


def test_a_reset_between_serving_and_announcing():
    """The device is reset (the model's ring state starts again), the guest makes a request
    available and notifies, the device completes it: compared, not lost to the reset."""
    mem, drv, model, checker, device, dev_mem, errors = _bench(FEATURES)
    _workload(drv, checker, device, dev_mem, FEATURES, n=3)
    model.blk.reset()
    device.reset()
    drv.set_avail_idx(0)
    mem.poke(drv.queue.device + 2, bytes(2))
    drv.request(T_IN, sector=1, in_len=513)
    checker.serve_all()
    device.process(0, dev_mem, drv.queue, FEATURES)
    assert errors == [] and checker.compared == 4, errors


def test_outstanding_lists_queues_with_requests_in_flight():
    mem, drv, model, checker, device, dev_mem, errors = _bench(FEATURES)
    assert checker.outstanding() == []
    drv.request(T_FLUSH, in_len=1)
    assert checker.outstanding() == [0]
    device.process(0, dev_mem, drv.queue, FEATURES)
    assert checker.outstanding() == [] and errors == []
    assert "avail flags 0x0 idx 1" in checker.describe()[0]
