"""The application layer: what every entrypoint (the CLI, the HTTP API) calls.

`bootstrap` is the composition root, `lifecycle` records requests, `queries` reads the
projections, `maintenance` rebuilds them and reconciles the store with the hosts, `auth`
keeps users, tokens and logins. Every call takes plain values (and the caller's identity
where something is recorded) and returns plain data: dicts, lists and small dataclasses
an entrypoint renders as it likes. `validation` checks every value a request brings before
anything is recorded, once for both entrypoints. `worker` is `serve`'s runtime: it drives
instances through the process manager (domain/process_manager.py), whose commit policy
(`step_recording`) and host ranking (`placement`) live here too.
"""
