"""What a real registry allocates on write, beyond defaulting: Service cluster IPs and node ports.

Owns: `allocate(allocator, obj, old)` for core/v1 Services: a create without `spec.clusterIP` gets the
next free address of the service range (10.96.0.0/12, from 10.96.0.10 up; `clusterIP: None` stays
headless), mirrored in `clusterIPs`, with `ipFamilies: [IPv4]` and `ipFamilyPolicy: SingleStack`;
NodePort and LoadBalancer ports without `nodePort` get one from 30000-32767; an update that leaves these
out keeps the old values (the real strategy's `patchAllocatedValues`), so clients that do not send them
back never see them change. `Allocator` is the per-cluster state (one per `store.Cluster`), deterministic.

Does not: default other fields (`fleet.sim.kinds.defaults`), validate immutability of a changed clusterIP, or
release addresses of deleted Services (the range is far larger than any test uses).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/12")
FIRST_HOST = 10  # 10.96.0.1 is the `kubernetes` Service's address on real clusters
NODE_PORTS = range(30000, 32768)


@dataclass
class Allocator:
    next_ip: int = FIRST_HOST
    next_port: int = NODE_PORTS.start
    used_ips: set[str] = field(default_factory=set)
    used_ports: set[int] = field(default_factory=set)

    def ip(self) -> str:
        while True:
            address = str(SERVICE_RANGE.network_address + self.next_ip)
            self.next_ip += 1
            if address not in self.used_ips:
                self.used_ips.add(address)
                return address

    def port(self) -> int:
        while True:
            port = self.next_port
            self.next_port = self.next_port + 1 if self.next_port + 1 < NODE_PORTS.stop else NODE_PORTS.start
            if port not in self.used_ports:
                self.used_ports.add(port)
                return port


def allocate(allocator: Allocator, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Fill the allocated fields of a Service in place (create: new values; update: the old ones)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    old_spec = (old or {}).get("spec") if isinstance((old or {}).get("spec"), dict) else None
    kind = spec.get("type") or "ClusterIP"
    if kind != "ExternalName":
        if old_spec is not None and not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
            if old_spec.get("clusterIPs"):
                spec["clusterIPs"] = old_spec["clusterIPs"]
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocator.ip()
        elif spec["clusterIP"] != "None":
            allocator.used_ips.add(str(spec["clusterIP"]))
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        if spec["clusterIP"] == "None" and not spec.get("selector"):
            # A headless Service without selector gets both families, whatever the cluster's are.
            spec.setdefault("ipFamilyPolicy", "RequireDualStack")
            spec.setdefault("ipFamilies", ["IPv4", "IPv6"])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    if kind in ("NodePort", "LoadBalancer"):
        old_ports = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in (old_spec or {}).get("ports") or []
            if isinstance(p, dict)
        }
        for port in spec.get("ports") or []:
            if not isinstance(port, dict):
                continue
            if port.get("nodePort"):
                if isinstance(port["nodePort"], int):
                    allocator.used_ports.add(port["nodePort"])
                continue
            previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
            port["nodePort"] = previous if isinstance(previous, int) else allocator.port()
