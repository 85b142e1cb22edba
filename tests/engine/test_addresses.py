"""Which addresses a redirect may lead Persona to (engine/addresses.py)."""

from __future__ import annotations

import pytest

from engine.addresses import internal_address, ip_literal


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "169.254.169.254",  # cloud metadata
        "fe80::1%eth0",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "fc00::1",
        "224.0.0.1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "not an address",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert internal_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "[2606:4700::1111]"])
def test_public_addresses_are_not(address: str) -> None:
    assert not internal_address(address)


def test_ip_literals() -> None:
    assert ip_literal("10.0.0.1") and ip_literal("[::1]") and ip_literal("fe80::1%eth0")
    assert not ip_literal("localhost") and not ip_literal("feeds.example")
