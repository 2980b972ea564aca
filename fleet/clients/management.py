"""The management cluster: the Kubernetes API server through which replicas of one instance coordinate.

Owns: the requests about fleet's `coordination.k8s.io/v1` Leases in namespace ``fleet-system`` (read them
all or one, create, update over a resourceVersion, delete over a resourceVersion) and creating that namespace
when it is missing; the User-Agent that names the replica on every request (`user_agent`); and the
request settings that keep a lease write within a retry period (`settings_for`).

Every write is optimistic: a create fails when the lease exists, an update or delete carries the
resourceVersion the replica read (or wrote), and a 409 (or a 404: the lease is gone) means another
replica won. Those come back as None / False; every other failure raises, and its outcome is unknown (a
write whose answer was lost may have landed: the next read tells, `fleet.core.coordination.observe`).
A lease that cannot be read fails the whole read (`leases.LeaseError`): it is never taken as free.

Does not: decide which leases to take or give up (`fleet.core.coordination`), build lease records
(`fleet.core.leases`), or keep time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fleet
from fleet.clients import kube
from fleet.core import leases

LEASES = kube.ResourceType(
    group="coordination.k8s.io",
    version="v1",
    kind="Lease",
    plural="leases",
    namespaced=True,
    verbs=("create", "delete", "get", "list", "update", "watch"),
)


def user_agent(replica: str) -> str:
    """The User-Agent of every request of replica `replica` (to the management cluster and to clusters)."""
    return f"fleet/{fleet.__version__} (replica {replica})"


def settings_for(base: kube.Settings, *, timings: leases.Timings, replica: str) -> kube.Settings:
    """`base` for the management cluster: one attempt ends within the retry period and all of them within
    two, so a renewal is answered (or given up) long before the renew deadline and the next one is never
    queued behind it."""
    return kube.with_settings(
        base,
        request_timeout=min(base.request_timeout, timings.retry),
        connect_timeout=min(base.connect_timeout, timings.retry),
        retry_budget=2 * timings.retry,
        max_attempts=3,
        backoff_base=min(base.backoff_base, timings.retry / 10),
        user_agent=user_agent(replica),
    )


class Leases:
    """The leases of one instance on the management cluster, through `client`."""

    def __init__(self, client: kube.Client, *, instance: str) -> None:
        self.client = client
        self.instance = instance

    async def aclose(self) -> None:
        await self.client.aclose()

    def _where(self, name: str) -> str:
        return f"Lease/{leases.NAMESPACE}/{name}"

    async def prepare(self) -> None:
        """Create namespace ``fleet-system`` when it is missing (left alone when it exists)."""
        await self.client.create_namespace(leases.NAMESPACE, instance=self.instance)

    async def read(self) -> dict[str, leases.Record]:
        """Every lease of the instance, by name (one list, all pages)."""
        what = f"cluster {self.client.cluster}: list leases of instance {self.instance} in {leases.NAMESPACE}"
        items, _ = await self.client.list_pages(
            LEASES,
            LEASES.collection_path(leases.NAMESPACE),
            what=what,
            params={
                "labelSelector": leases.selector(instance=self.instance),
                "limit": str(self.client.settings.page_size),
            },
        )
        out: dict[str, leases.Record] = {}
        for item in items:
            record = leases.decode(item)
            out[record.name] = record
        return out

    async def get(self, name: str) -> leases.Record | None:
        """One lease of the instance; None when it does not exist."""
        status, doc = await self.client.request(
            "GET",
            LEASES.object_path(leases.NAMESPACE, name),
            what=self._where(name),
            accept=(404,),
            check=kube.is_object,
        )
        return None if status == 404 else self._record(doc, name)

    def _record(self, doc: Mapping[str, Any], name: str) -> leases.Record:
        record = leases.decode(doc)
        if record.name != name or not record.version:
            raise kube.BadAnswer(f"{self._where(name)}: the answer to a write is not that lease")
        return record

    async def create(self, record: leases.Record, *, role: str) -> leases.Record | None:
        """Create the lease; None when it exists already (another replica created it first)."""
        if record.version:
            raise ValueError(f"{self._where(record.name)}: a create carries no resourceVersion")
        status, doc = await self.client.request(
            "POST",
            LEASES.collection_path(leases.NAMESPACE),
            what=self._where(record.name),
            params={"fieldManager": "fleet"},
            body=leases.encode(record, instance=self.instance, role=role),
            accept=(409,),
            check=kube.is_object,
        )
        return None if status == 409 else self._record(doc, record.name)

    async def update(self, record: leases.Record, *, role: str) -> leases.Record | None:
        """Replace the lease over `record.version`; None when it changed since (409) or is gone (404)."""
        if not record.version:
            raise ValueError(f"{self._where(record.name)}: an update must carry the resourceVersion it read")
        status, doc = await self.client.request(
            "PUT",
            LEASES.object_path(leases.NAMESPACE, record.name),
            what=self._where(record.name),
            params={"fieldManager": "fleet"},
            body=leases.encode(record, instance=self.instance, role=role),
            accept=(404, 409),
            check=kube.is_object,
        )
        return None if status in (404, 409) else self._record(doc, record.name)

    async def write(self, record: leases.Record, *, role: str) -> leases.Record | None:
        """`create` a record without a version, `update` one with."""
        if record.version:
            return await self.update(record, role=role)
        return await self.create(record, role=role)

    async def delete(self, record: leases.Record) -> bool:
        """Delete the lease if it is still at `record.version`; False when it changed or is gone."""
        if not record.version:
            raise ValueError(f"{self._where(record.name)}: a delete must carry the resourceVersion it read")
        status, _ = await self.client.request(
            "DELETE",
            LEASES.object_path(leases.NAMESPACE, record.name),
            what=self._where(record.name),
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": record.version},
            },
            accept=(404, 409),
        )
        return status not in (404, 409)
