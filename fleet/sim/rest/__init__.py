"""The Kubernetes REST surface of a simulated cluster: HTTP request in, object or Status out.

`routing.Api` maps a path to a verb; `requests` reads bodies and options and shapes answers; `reads`
(get, list, watch), `writes` (create, update, delete, reviews) and `patches` (the four patch types,
server-side apply included) run the verbs against `fleet.sim.storage.store`; `tables` prints kubectl's Tables;
`discovery` builds discovery and OpenAPI documents. Sockets, faults and the journal are
`fleet.sim.server`'s.
"""
