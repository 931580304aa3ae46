"""Pod IPs: one loopback address per live pod, from the node's range (a pure allocator).

Linux routes all of 127.0.0.0/8 to `lo`, so a process can bind any of them without setup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class RangeExhausted(RuntimeError):
    pass


class IpAllocator:
    """Unique addresses among live pods (keyed by pod UID); lowest free address first.

    `reserved` addresses (the host IP, say) are never handed out; the network and
    broadcast addresses of the range are skipped as well.
    """

    def __init__(self, cidr: str, reserved: Iterable[str] = ()) -> None:
        self.network = ipaddress.IPv4Network(cidr)
        if not self.network.is_loopback:
            raise ValueError(f"pod range {cidr} is not within 127.0.0.0/8")
        self.reserved = {ipaddress.IPv4Address(a) for a in reserved}
        self._by_key: dict[str, ipaddress.IPv4Address] = {}
        self._used: set[ipaddress.IPv4Address] = set()

    def __contains__(self, ip: str) -> bool:
        try:
            return ipaddress.IPv4Address(ip) in self.network
        except ValueError:
            return False

    def get(self, key: str) -> str | None:
        ip = self._by_key.get(key)
        return None if ip is None else str(ip)

    def in_use(self) -> dict[str, str]:
        return {k: str(v) for k, v in self._by_key.items()}

    def adopt(self, key: str, ip: str) -> bool:
        """Keep `ip` for `key` (a pod found after a restart) if it is in range and free."""
        if key in self._by_key:
            return str(self._by_key[key]) == ip
        if ip not in self:
            return False
        addr = ipaddress.IPv4Address(ip)
        if addr in self._used or addr in self.reserved or not self._usable(addr):
            return False
        self._by_key[key] = addr
        self._used.add(addr)
        return True

    def allocate(self, key: str) -> str:
        """The address of `key`, allocating the lowest free one on first call."""
        if key in self._by_key:
            return str(self._by_key[key])
        for addr in self.network.hosts():
            if addr not in self._used and addr not in self.reserved and self._usable(addr):
                self._by_key[key] = addr
                self._used.add(addr)
                return str(addr)
        raise RangeExhausted(f"no free address left in {self.network}")

    def release(self, key: str) -> None:
        addr = self._by_key.pop(key, None)
        if addr is not None:
            self._used.discard(addr)

    @staticmethod
    def _usable(addr: ipaddress.IPv4Address) -> bool:
        last = int(addr) & 0xFF
        return last not in (0, 255)
