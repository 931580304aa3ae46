"""Pod IP allocation of the process node (a pure allocator)."""

from __future__ import annotations

import pytest

from local_stack.node.ipam import IpAllocator, RangeExhausted


def test_lowest_free_address_first_and_stable_per_key() -> None:
    ipam = IpAllocator("127.0.16.0/20", reserved=["127.0.16.1"])
    assert ipam.allocate("a") == "127.0.16.2"
    assert ipam.allocate("b") == "127.0.16.3"
    assert ipam.allocate("a") == "127.0.16.2"
    ipam.release("a")
    assert ipam.allocate("c") == "127.0.16.2"
    assert ipam.in_use() == {"b": "127.0.16.3", "c": "127.0.16.2"}


@pytest.mark.parametrize(
    ("ip", "ok"),
    [
        ("127.0.16.9", True),
        ("127.0.17.0", False),  # .0 is skipped
        ("127.0.17.255", False),  # .255 is skipped
        ("127.0.32.1", False),  # out of range
        ("10.0.0.1", False),
        ("not-an-ip", False),
        ("127.0.16.1", False),  # reserved (the host IP)
    ],
)
def test_adopt(ip: str, ok: bool) -> None:
    ipam = IpAllocator("127.0.16.0/20", reserved=["127.0.16.1"])
    assert ipam.adopt("a", ip) is ok
    assert (ipam.get("a") == ip) is ok


def test_adopt_refuses_an_address_in_use() -> None:
    ipam = IpAllocator("127.0.16.0/24")
    ip = ipam.allocate("a")
    assert not ipam.adopt("b", ip)
    assert ipam.adopt("a", ip)


def test_skips_dot_zero_and_dot_255_across_a_wide_range() -> None:
    ipam = IpAllocator("127.0.16.0/23")
    ips = [ipam.allocate(str(i)) for i in range(300)]
    assert len(set(ips)) == 300
    assert not [ip for ip in ips if ip.endswith((".0", ".255"))]


def test_exhaustion_and_non_loopback() -> None:
    ipam = IpAllocator("127.0.16.0/30")
    ipam.allocate("a")
    ipam.allocate("b")
    with pytest.raises(RangeExhausted):
        ipam.allocate("c")
    with pytest.raises(ValueError):
        IpAllocator("10.0.0.0/24")
