"""`shelf user …`: parsing and printing; the work is application/auth/users.py's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from application.auth.keys import KeyRing
from application.auth.setup import key_directory
from application.auth.tokens import DEFAULT_LIFETIME
from application.auth.users import UserAdmin
from application.bootstrap import Context
from application.identity import operating_system_user
from cli import render
from domain.errors import UsageError
from domain.identity import DEFAULT_ROLES
from domain.service import new_request_id

USER_COLUMNS = ("name", "id", "project", "roles", "credentials", "created")


def add_user_commands(sub: argparse._SubParsersAction[Any]) -> None:
    user = sub.add_parser("user", help="users of the API (standalone identity)")
    commands = user.add_subparsers(dest="user_command", required=True)
    create = commands.add_parser("create", help="a user with a project and roles")
    create.add_argument("name")
    create.add_argument("--project", required=True)
    create.add_argument("--role", action="append", required=True, choices=DEFAULT_ROLES,
                        dest="roles", help="admin ⊃ member ⊃ reader (repeatable)")
    _password_stdin(create)
    create.set_defaults(func=user_create)
    listing = commands.add_parser("list", help="users, their project and roles")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=user_list)
    password = commands.add_parser("set-password", help="a new password (revokes tokens)")
    password.add_argument("name")
    _password_stdin(password)
    password.set_defaults(func=user_set_password)
    delete = commands.add_parser("delete", help="delete a user (revokes its tokens)")
    delete.add_argument("name")
    delete.set_defaults(func=user_delete)
    for verb in ("grant", "revoke"):
        parser = commands.add_parser(verb, help=f"{verb} a role")
        parser.add_argument("name")
        parser.add_argument("--role", required=True, choices=DEFAULT_ROLES)
        parser.set_defaults(func=user_grant if verb == "grant" else user_revoke)
    _add_credential_commands(commands)
    rotate = commands.add_parser("rotate-keys", help="a new token signing key")
    rotate.add_argument("--token-keys", metavar="DIR",
                        help="key directory (default $SHELF_TOKEN_KEYS, else "
                             "DATA_DIR/token-keys)")
    rotate.add_argument("--token-lifetime", type=float,
                        default=DEFAULT_LIFETIME.total_seconds(), metavar="S",
                        help="the longest token lifetime in use: keys that can't have "
                             "signed a live token are dropped (3600)")
    rotate.set_defaults(func=user_rotate_keys)


def add_identity_options(api: argparse.ArgumentParser) -> None:
    """`shelf api`'s options for identity and TLS."""
    api.add_argument("--token-keys", metavar="DIR",
                     help="standalone: token key directory (default $SHELF_TOKEN_KEYS, "
                          "else DATA_DIR/token-keys; made on first start)")
    api.add_argument("--token-lifetime", type=float, metavar="S",
                     default=DEFAULT_LIFETIME.total_seconds(),
                     help="standalone: seconds a token lives (3600)")
    api.add_argument("--revocation-refresh", type=float, default=5.0, metavar="S",
                     help="standalone: re-read the revocation list this often (5)")
    api.add_argument("--keystone-url", metavar="URL",
                     help="keystone: its URL, e.g. https://keystone.example:5000")
    api.add_argument("--keystone-cache", type=float, default=60.0, metavar="S",
                     help="keystone: keep a validated token this long (60); a token "
                          "revoked in Keystone may work here this long")
    api.add_argument("--keystone-cafile", metavar="FILE",
                     help="keystone: CA bundle for Keystone's certificate")
    api.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS: certificate")
    api.add_argument("--tls-key", type=Path, metavar="FILE", help="serve HTTPS: its key")
    api.add_argument("--insecure-http", action="store_true",
                     help="allow plain HTTP on a non-loopback address")


def _add_credential_commands(commands: argparse._SubParsersAction[Any]) -> None:
    credential = commands.add_parser("credential", help="application credentials")
    verbs = credential.add_subparsers(dest="credential_command", required=True)
    create = verbs.add_parser("create", help="prints an id and a secret, once")
    create.add_argument("name", help="the user")
    create.add_argument("--name", dest="credential_name", help="a label (default: cred-ID)")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(func=credential_create)
    delete = verbs.add_parser("delete", help="delete one (revokes its tokens)")
    delete.add_argument("name", help="the user")
    delete.add_argument("credential", help="its id or label")
    delete.set_defaults(func=credential_delete)


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true", required=True,
                        help="read the password from standard input (never an argument)")


def read_password() -> str:
    text = sys.stdin.readline()
    password = text[:-1] if text.endswith("\n") else text
    if not password:
        raise UsageError("no password on standard input")
    return password


def _admin(ctx: Context) -> UserAdmin:
    return UserAdmin(ctx.repo)


def user_create(ctx: Context, args: argparse.Namespace) -> int:
    user = _admin(ctx).create(args.name, args.project, args.roles, read_password(),
                              operating_system_user(), new_request_id())
    print(user.id.hex)
    return 0


def user_list(ctx: Context, args: argparse.Namespace) -> int:
    users = _admin(ctx).list()
    if args.json:
        render.print_json(users)
    else:
        render.print_table([{**user, "roles": ",".join(user["roles"]),
                             "credentials": ",".join(user["credentials"])}
                            for user in users], USER_COLUMNS)
    return 0


def user_set_password(ctx: Context, args: argparse.Namespace) -> int:
    _admin(ctx).set_password(args.name, read_password(), operating_system_user(), new_request_id())
    return 0


def user_delete(ctx: Context, args: argparse.Namespace) -> int:
    _admin(ctx).delete(args.name, operating_system_user(), new_request_id())
    return 0


def user_grant(ctx: Context, args: argparse.Namespace) -> int:
    _admin(ctx).grant(args.name, args.role, operating_system_user(), new_request_id())
    return 0


def user_revoke(ctx: Context, args: argparse.Namespace) -> int:
    _admin(ctx).revoke(args.name, args.role, operating_system_user(), new_request_id())
    return 0


def credential_create(ctx: Context, args: argparse.Namespace) -> int:
    made = _admin(ctx).create_credential(args.name, args.credential_name, operating_system_user(),
                                         new_request_id())
    if args.json:
        render.print_json({"id": made.id, "name": made.name, "secret": made.secret})
    else:
        print(f"id      {made.id}\nname    {made.name}\nsecret  {made.secret}")
        print("(the secret is shown only now: it is stored as a hash)", file=sys.stderr)
    return 0


def credential_delete(ctx: Context, args: argparse.Namespace) -> int:
    print(_admin(ctx).delete_credential(args.name, args.credential, operating_system_user(),
                                        new_request_id()))
    return 0


def user_rotate_keys(ctx: Context, args: argparse.Namespace) -> int:
    ring = KeyRing(key_directory(ctx.data_dir, args.token_keys))
    new, dropped = ring.rotate(args.token_lifetime)
    print(f"signing with {new.name}; dropped {len(dropped)} old key(s)")
    return 0
