"""`fleet serve`'s replica options (docs/scaling.md): the management cluster, the shard count and the lease
timings, checked before anything runs; and the replica built from them once the controller starts.

Owns: `Management` (the checked options), `check` (options -> `Management` or None for a single replica,
`errors.InputError` naming the flag otherwise), `connect` (this process's replica identity, its lease loop
over a client of the management cluster, and the cluster requests' settings carrying its User-Agent).
Does not: keep leases (`fleet.controller.replicas`) or decide anything (`fleet.core.coordination`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from fleet.cli import common
from fleet.clients import kube, management
from fleet.controller import replicas
from fleet.core import coordination, errors, leases, sharding


@dataclass(frozen=True)
class Management:
    kubeconfig: str
    context: str | None
    shards: int
    timings: leases.Timings


def check(
    *,
    kubeconfig: str | None,
    context: str | None,
    shards: int | None,
    duration: str | None,
    renew_deadline: str | None,
    retry: str | None,
    flags: dict[str, str],
) -> Management | None:
    """The replica options, or None without `--management-kubeconfig` (then none of the others may be set)."""
    if kubeconfig is None:
        given = [
            flags[name]
            for name, value in (
                ("context", context),
                ("shards", shards),
                ("duration", duration),
                ("renew_deadline", renew_deadline),
                ("retry", retry),
            )
            if value is not None
        ]
        if given:
            raise errors.InputError(
                f"{given[0]}: only with {flags['kubeconfig']} (replicas, docs/scaling.md)"
            )
        return None
    if not kubeconfig.strip():
        raise errors.InputError(f"{flags['kubeconfig']}: empty")
    if context is not None and not context.strip():
        raise errors.InputError(f"{flags['context']}: empty")
    count = sharding.DEFAULT_SHARDS if shards is None else shards
    try:
        sharding.check_shards(count)
    except ValueError as e:
        raise errors.InputError(f"{flags['shards']}: {e}") from None
    default = leases.Timings()
    seconds = {
        name: default_value
        if text is None
        else common.parse_duration(text, flag=flags[name], minimum=0.001, maximum=common.HOUR)
        for name, text, default_value in (
            ("duration", duration, default.duration),
            ("renew_deadline", renew_deadline, default.renew_deadline),
            ("retry", retry, default.retry),
        )
    }
    try:
        timings = leases.Timings(
            duration=seconds["duration"], renew_deadline=seconds["renew_deadline"], retry=seconds["retry"]
        )
    except ValueError as e:
        names = ", ".join(flags[n] for n in ("duration", "renew_deadline", "retry"))
        raise errors.InputError(f"{names}: {e}") from None
    return Management(kubeconfig=kubeconfig, context=context, shards=count, timings=timings)


async def connect(
    options: Management, *, instance: str, kube_settings: kube.Settings, allow_exec_auth: bool
) -> tuple[replicas.Replica, kube.Settings]:
    """This process's replica (a new identity: a restarted process is another replica) over a client of
    the management cluster, and `kube_settings` with its User-Agent for the clusters' requests.
    `errors.InputError` naming the file when the management kubeconfig or its context cannot be used."""
    config = await kube.load_kubeconfig(options.kubeconfig, allow_exec_auth=allow_exec_auth)
    name = options.context
    if name is None:
        if len(config.contexts) != 1:
            raise errors.InputError(
                f"--management-kubeconfig {options.kubeconfig}: {len(config.contexts)} contexts; name the "
                "management cluster's with --management-context"
            )
        name = next(iter(config.contexts))
    context = config.context(name)
    if context.error is not None:
        raise errors.InputError(f"--management-kubeconfig {options.kubeconfig}: {context.error}")
    me = replicas.new_identity(socket.gethostname())
    client = kube.Client(
        cluster="management",
        context=context,
        settings=management.settings_for(kube_settings, timings=options.timings, replica=me),
    )
    replica = replicas.Replica(
        management.Leases(client, instance=instance),
        coordination.Config(instance=instance, me=me, shards=options.shards, timings=options.timings),
    )
    return replica, kube.with_settings(kube_settings, user_agent=management.user_agent(me))
