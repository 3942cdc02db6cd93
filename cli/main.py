"""`shelf`: the entrypoint. Parse, call, print; every error is one line and an exit code.

Exit codes: 0 ok, 1 operation failed, 2 usage error or a value out of range,
3 no such instance/host/image/file/store, 4 conflict (refused in this state, or lost a
race), 5 timed out waiting, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

from adapters.logs import configure_logging
from application.bootstrap import Context
from application.identity import DEFAULT_PROJECT
from application.store import require_existing_store
from cli import commands, edges, render
from cli.checks import check_arguments, command_of
from cli.identity import add_identity_options as _add_identity_options
from cli.identity import add_user_commands
from domain.errors import ShelfError
from domain.host import STORAGE_MODES, VIRT_TYPES

Command = Callable[[Context, argparse.Namespace], int]
INSTANCE_ACTIONS = {
    "shelve": "shelve", "shelve-offload": "shelveOffload", "start": "start", "stop": "stop",
    "pause": "pause", "unpause": "unpause", "suspend": "suspend", "resume": "resume",
    "delete": "delete", "unshelve": "unshelve",
}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"shelf: usage error: {message} (see `{self.prog} --help`)\n")


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="block until the task is done")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait (300)")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


TIME_HELP = "ISO 8601 (UTC unless an offset is given) or relative: -30s, -15m, -2h, -3d, -1w"


def _as_of_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--as-of", metavar="TIME", help=f"{what}; TIME is {TIME_HELP}")


def _add_host_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    host = sub.add_parser("host", help="hypervisor hosts").add_subparsers(
        dest="host_command", required=True
    )
    add = host.add_parser("add", help="register a libvirt host")
    add.add_argument("name")
    add.add_argument("--uri", required=True, help="libvirt URI, e.g. qemu:///system")
    for option in ("--vcpus", "--memory-mb", "--disk-gb"):
        add.add_argument(option, type=int, help="capacity (default: what libvirt reports)")
    add.add_argument("--virt-type", choices=VIRT_TYPES, default="auto",
                     help="kvm, qemu (TCG), or auto: kvm if libvirt offers it and the host "
                     "CPU has vmx/svm, else qemu (default)")
    add.add_argument("--storage", choices=STORAGE_MODES, default="auto",
                     help="auto: clone (reflink) or hard-link disks to and from the image "
                     "store where the filesystems allow it, else copy (default); copy: "
                     "always copy")
    add.set_defaults(func=commands.host_add)
    add.add_argument("--connect-timeout", type=float, metavar="S",
                     help="seconds to wait for the host to answer (default "
                          "$SHELF_LIBVIRT_CONNECT_TIMEOUT, else 30)")
    remove = host.add_parser("remove", help="unregister a host (refused while instances "
                             "hold claims there)")
    remove.add_argument("name")
    remove.add_argument("--force", action="store_true",
                        help="delete the instances holding claims there without the host "
                             "(Nova's local delete); what is left on it is for reconcile")
    remove.set_defaults(func=commands.host_remove)
    listing = host.add_parser("list", help="hosts with their capacity and usage")
    _json_option(listing)
    _as_of_option(listing, "usage of every host at TIME")
    listing.set_defaults(func=commands.host_list)


def _add_instance_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    boot = sub.add_parser("boot", help="create an instance")
    boot.add_argument("name")
    boot.add_argument("--host", help="default: the host with the most free memory that fits")
    boot.add_argument("--flavor", help="flavor id or name: the sizes it gives")
    for option in ("--vcpus", "--memory-mb", "--disk-gb"):
        boot.add_argument(option, type=int, help="without --flavor: required; with it, "
                          "instead of the flavor's")
    _project_option(boot, f"the instance's project (default $SHELF_PROJECT, else "
                          f"{DEFAULT_PROJECT})")
    boot.add_argument("--image", help="image name or id (default: a blank root disk)")
    boot.add_argument("--volume-backed", action="store_true",
                      help="root disk on a persistent volume")
    _wait_options(boot)
    boot.set_defaults(func=commands.boot)
    for command, action in INSTANCE_ACTIONS.items():
        parser = sub.add_parser(command, help=f"request {action}")
        parser.add_argument("instance", help="instance id or name")
        if command == "unshelve":
            parser.add_argument("--host", help="unshelve onto this host (offloaded only)")
        _wait_options(parser)
        parser.set_defaults(func=commands.instance_request, action=action)
    listing = sub.add_parser("list", help="instances")
    _json_option(listing)
    _project_option(listing, "only this project's instances (default: every project's)")
    listing.set_defaults(func=commands.list_instances)
    for command, func in (("show", commands.show), ("actions", commands.actions),
                          ("history", commands.history)):
        parser = sub.add_parser(command, help=f"{command} of an instance")
        parser.add_argument("instance", help="instance id or name")
        _json_option(parser)
        if command == "show":
            _as_of_option(parser, "the instance as it was at TIME")
        parser.set_defaults(func=func)
    console = sub.add_parser("console-log", help="the instance's serial console log")
    console.add_argument("instance", help="instance id or name")
    console.add_argument("--lines", type=int, metavar="N", help="only the last N lines")
    console.set_defaults(func=commands.console_log)


def _project_option(parser: argparse.ArgumentParser, meaning: str) -> None:
    parser.add_argument("--project", metavar="PROJECT", help=meaning)


def _add_flavor_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    flavor = sub.add_parser("flavor", help="named sizes to boot from").add_subparsers(
        dest="flavor_command", required=True)
    create = flavor.add_parser("create", help="define a flavor")
    create.add_argument("name")
    for option in ("--vcpus", "--memory-mb"):
        create.add_argument(option, type=int, required=True)
    # A flavor's disk may be 0 (Nova's: boot from a volume), an instance's not.
    create.add_argument("--disk-gb", dest="flavor_disk_gb", type=int, required=True)
    create.add_argument("--id", help="the flavor's id (default: a UUID from the name)")
    create.add_argument("--ephemeral-gb", type=int, default=0, help="(0)")
    create.add_argument("--swap-mb", type=int, default=0, help="(0)")
    create.add_argument("--private", action="store_true", help="not public (API: admin only)")
    create.add_argument("--description")
    create.set_defaults(func=commands.flavor_create)
    listing = flavor.add_parser("list", help="every flavor")
    _json_option(listing)
    listing.set_defaults(func=commands.flavor_list)
    delete = flavor.add_parser("delete", help="delete a flavor (instances keep its sizes)")
    delete.add_argument("flavor", help="flavor id or name")
    delete.set_defaults(func=commands.flavor_delete)


def _add_image_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    image = sub.add_parser("image", help="the image store").add_subparsers(
        dest="image_command", required=True
    )
    imp = image.add_parser("import", help="put a qcow2/raw file into the image store")
    imp.add_argument("name")
    imp.add_argument("file")
    imp.set_defaults(func=commands.image_import)
    listing = image.add_parser("list", help="images (shelved ones are <name>-shelved)")
    _json_option(listing)
    listing.set_defaults(func=commands.image_list)


def _add_audit_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    audit = sub.add_parser("audit", help="instance actions across the fleet, filtered",
                           epilog=f"TIME is {TIME_HELP}.")
    audit.add_argument("--since", metavar="TIME", help="actions that started at or after")
    audit.add_argument("--until", metavar="TIME", help="actions that started before")
    audit.add_argument("--instance", help="instance id or name")
    _project_option(audit, "actions on this project's instances")
    audit.add_argument("--host", help="host the action ran on")
    audit.add_argument("--action", help="e.g. shelve, unshelve, delete")
    audit.add_argument("--user", help="who asked")
    audit.add_argument("--result", choices=("Success", "Error"))
    audit.add_argument("--format", choices=("table", "json", "csv"), default="table")
    audit.add_argument("--events", action="store_true", help="include each action's events")
    audit.add_argument("--limit", type=int, default=100,
                       help="actions per page (100; 0 = all)")
    audit.add_argument("--after", type=int, default=0, metavar="POSITION",
                       help="the next page: actions after this position")
    audit.set_defaults(func=commands.audit)
    projections = sub.add_parser("projections", help="the read models").add_subparsers(
        dest="projections_command", required=True)
    rebuild = projections.add_parser("rebuild", help="empty and replay from the event store")
    rebuild.add_argument("names", nargs="*", metavar="NAME",
                         help="instances, host_usage or audit (default: all)")
    rebuild.add_argument("--jobs", type=int, default=None, metavar="N",
                         help="processes replaying at once, on PostgreSQL (default: one "
                              "per CPU, at most one per projection; SQLite: 1)")
    rebuild.set_defaults(func=commands.projections_rebuild)
    status = projections.add_parser("status", help="each projection's position and lag")
    _json_option(status)
    status.set_defaults(func=commands.projections_status)


def _add_service_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    serve = sub.add_parser("serve", help="carry out recorded requests (the worker)")
    serve.add_argument("--once", action="store_true",
                       help="finish everything in flight, then exit")
    serve.add_argument("--shelved-offload-time", type=float, default=0,
                       help="-1 never offload, 0 at once (default), N seconds after shelving")
    serve.add_argument("--shutdown-timeout", type=float, default=60,
                       help="seconds to wait for a clean shutdown before destroying (60)")
    serve.add_argument("--shutdown-retry-interval", type=float, default=10,
                       help="seconds between clean-shutdown requests (10)")
    serve.add_argument("--threads", type=int, default=4,
                       help="instances driven at once (4)")
    serve.add_argument("--host", action="append", metavar="NAME", dest="hosts",
                       help="perform hypervisor steps only on this host (repeatable; "
                            "default: every host). Run one such serve per hypervisor host")
    serve.add_argument("--connect-timeout", type=float, metavar="S",
                       help="seconds to wait for a host's libvirt to answer a connection "
                            "(default $SHELF_LIBVIRT_CONNECT_TIMEOUT, else 30)")
    serve.set_defaults(func=commands.serve)
    reconcile = sub.add_parser("reconcile", help="compare the store with every host")
    reconcile.add_argument("--all", action="store_true",
                           help="also list what other stores or tools made (never fixed)")
    reconcile.add_argument("--fix", action="store_true",
                           help="remove leaks that no instance owns")
    _json_option(reconcile)
    reconcile.set_defaults(func=commands.reconcile_command)
    demo = sub.add_parser("demo", help="the whole story on a temporary store, in one process")
    demo.set_defaults(func=_demo)


def _add_api_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    api = sub.add_parser("api", help="serve the Compute API (a Nova subset) over HTTP")
    api.add_argument("--listen", default="127.0.0.1:8774", metavar="HOST:PORT",
                     help="address to listen on (127.0.0.1:8774)")
    api.add_argument("--auth", choices=("noauth", "standalone", "keystone"),
                     default="standalone", help="how callers are identified: standalone "
                     "(default: `shelf user` accounts, Keystone v3 login at /identity/v3), "
                     "keystone (an existing Keystone, --keystone-url), noauth (the token is "
                     "user:project; development only, loopback only)")
    api.add_argument("--policy-file", type=Path, metavar="PATH",
                     help="a policy.yaml overriding Nova's default rules")
    _add_identity_options(api)
    api.set_defaults(func=_api)


def _api(ctx: Context, args: argparse.Namespace) -> int:
    from api.serving import ApiSettings, serve  # only `shelf api` loads the web stack

    serve(ApiSettings(
        listen=args.listen, auth=args.auth, policy_file=args.policy_file,
        store_url=args.store, token_keys=args.token_keys,
        token_lifetime=args.token_lifetime, revocation_refresh=args.revocation_refresh,
        keystone_url=args.keystone_url, keystone_cache=args.keystone_cache,
        keystone_cafile=args.keystone_cafile, tls_cert=args.tls_cert, tls_key=args.tls_key,
        insecure_http=args.insecure_http))
    return 0


def _demo(ctx: Context, args: argparse.Namespace) -> int:
    from cli.demo import run_demo  # only the demo needs it

    return run_demo()


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="shelf", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="store URL (default $SHELF_STORE, else "
                        "sqlite:///./shelf.db; postgresql://HOST[:PORT]/DB for PostgreSQL)")
    # Gone: the CLI records the operating-system user; a typed name proved nothing.
    parser.add_argument("--user", dest="typed_user", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_host_commands(sub)
    _add_instance_commands(sub)
    _add_flavor_commands(sub)
    _add_image_commands(sub)
    _add_audit_commands(sub)
    _add_service_commands(sub)
    add_user_commands(sub)
    _add_api_command(sub)
    return parser


TIME_OPTIONS = ("--as-of", "--since", "--until")


def _glue_relative_times(argv: Sequence[str]) -> list[str]:
    """`--as-of -2h` reads as an option named -2h to argparse; make it `--as-of=-2h`."""
    glued: list[str] = []
    for arg in argv:
        if glued and glued[-1] in TIME_OPTIONS and arg.startswith("-"):
            glued[-1] = f"{glued[-1]}={arg}"
        else:
            glued.append(arg)
    return glued


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; Ctrl-C and a closed stdout end it quietly (cli/edges.py)."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at exit
        return code
    except KeyboardInterrupt:
        return _fail(edges.INTERRUPTED, "interrupted")
    except BrokenPipeError as error:
        if edges.stdout_closed():
            edges.silence_stdout()
            return 0
        return _fail(1, f"{type(error).__name__}: {error}")


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(
            _glue_relative_times(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:  # usage errors and --help: argparse already printed
        return stop.code if isinstance(stop.code, int) else 2
    configure_logging(os.environ.get("SHELF_LOG_LEVEL")
                      or ("info" if args.command in ("serve",) else "warning"))
    if args.typed_user is not None:
        return _fail(2, "usage error: --user is gone: the CLI records the operating-system "
                        "user it runs as (see README, \"Who is recorded\")")
    ctx: Context | None = None
    try:
        check_arguments(args)  # before anything is recorded
        ctx = Context(args.store)  # a bad --store is a usage error, too
        ctx.catch_up_progress = render.progress("catching up the projections")
        ctx.on_quarantined = render.quarantined_note
        if _reads_only(args):
            require_existing_store(ctx.store, ctx.db)
        func: Command = args.func
        return func(ctx, args)
    except ShelfError as error:
        return _fail(error.exit_code, str(error))
    except BrokenPipeError:
        raise  # main() tells a closed stdout from other pipes
    except Exception as error:  # never a traceback unless asked for
        if os.environ.get("SHELF_DEBUG") == "1":
            raise
        return _fail(1, f"{type(error).__name__}: {error}")
    finally:
        if ctx is not None:
            ctx.close()


# Commands that may make a new store (SQLite: its file; PostgreSQL: the tables); `image`
# commands and `user rotate-keys` don't open the store at all.
MAKE_STORE = {("host", "add"), ("serve", None), ("demo", None), ("user", "create"),
              ("user", "rotate-keys"), ("image", "import"), ("image", "list"),
              ("flavor", "create")}


def _reads_only(args: argparse.Namespace) -> bool:
    return command_of(args) not in MAKE_STORE


def _fail(code: int, message: str) -> int:
    with suppress(OSError):  # stderr is gone too: the exit code is all that is left
        print(f"shelf: {edges.one_line(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
