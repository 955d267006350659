"""``callrec users passwd``, the password hashes behind it, and ``callrec portal``'s start-up checks."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from callrec.cli.commands.portal import parse_listen
from callrec.store.access.passwords import check_password, hash_password, needs_rehash, verify_password
from callrec.store.access.principals import Users
from callrec.store.catalogue.db import Catalogue
from callrec.store.errors import InvalidArgument
from callrec.store.home import Home
from tests.helpers.portal_env import ME, Portal, audit_entries, build_home, login, run


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_home(tmp_path_factory.mktemp("portal-cli"))


def stored_hash(home: Path, user: str) -> str | None:
    with Catalogue(Home(home).catalogue_path) as catalogue:
        return Users(catalogue.db).password_hash(user)


# -- store.access.passwords ------------------------------------------------------------------------------


def test_hashes_verify_and_carry_their_parameters() -> None:
    stored = hash_password("correct horse battery", log2_n=10)
    assert stored.startswith("scrypt$ln=10,r=8,p=1$")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert hash_password("correct horse battery", log2_n=10) != stored  # a fresh salt each time
    assert needs_rehash(stored) and not needs_rehash(hash_password("correct horse battery"))


def test_the_same_password_typed_composed_or_decomposed_matches() -> None:
    composed = "mot de passe café"
    stored = hash_password(composed, log2_n=10)
    assert verify_password(unicodedata.normalize("NFD", composed), stored)


@pytest.mark.parametrize(
    "stored", [None, "", "plain", "scrypt$ln=30,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"]
)
def test_missing_or_malformed_hashes_never_match(stored: str | None) -> None:
    assert not verify_password("whatever it is", stored)


def test_passwords_must_be_long_enough_and_visible() -> None:
    for bad in ("short", " " * 20, "twelve chars\x00x", "x" * 2000):
        with pytest.raises(InvalidArgument):
            check_password(bad)
    with pytest.raises(InvalidArgument):
        hash_password("long enough password", log2_n=40)


# -- callrec users passwd -------------------------------------------------------------------------


def test_an_admin_sets_a_password_from_the_environment_and_it_logs_in(home: Path) -> None:
    result = run(home, "users", "passwd", "bob", env={"CALLREC_PORTAL_PASSWORD": "a brand new secret"})
    assert result.exit_code == 0 and "Set the portal password of bob" in result.output
    stored = stored_hash(home, "bob")
    assert stored and stored.startswith("scrypt$ln=15,") and "a brand new secret" not in stored
    client = Portal.make(home).app().test_client()
    assert login(client, "bob", "a brand new secret").status_code == 303
    entry = audit_entries(home, action="users.passwd")[-1]
    assert entry.user == ME and entry.detail == {"user": "bob", "cleared": False}


def test_a_password_file_and_clearing(home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from a file, twelve+\nignored second line\n")
    assert run(home, "users", "passwd", "carol", "--password-file", str(secret)).exit_code == 0
    assert verify_password("from a file, twelve+", stored_hash(home, "carol"))
    cleared = run(home, "users", "passwd", "carol", "--clear")
    assert cleared.exit_code == 0 and stored_hash(home, "carol") is None
    client = Portal.make(home).app().test_client()
    assert login(client, "carol", "from a file, twelve+").status_code == 401


def test_passwd_refuses_short_passwords_unknown_users_and_other_peoples_passwords(home: Path) -> None:
    short = run(home, "users", "passwd", "alice", env={"CALLREC_PORTAL_PASSWORD": "short"})
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    unknown = run(home, "users", "passwd", "nobody", env={"CALLREC_PORTAL_PASSWORD": "long enough secret"})
    assert unknown.exit_code == 1 and "no callrec user 'nobody'" in unknown.output
    before = stored_hash(home, "bob")
    other = run(
        home, "users", "passwd", "bob", as_user="alice", env={"CALLREC_PORTAL_PASSWORD": "alice owns bob now"}
    )
    assert other.exit_code == 1 and "may not manage users" in other.output
    assert stored_hash(home, "bob") == before
    denied = audit_entries(home, action="users.manage")[-1]
    assert (denied.user, denied.outcome, denied.detail["user"]) == ("alice", "denied", "bob")


def test_without_a_terminal_or_password_passwd_says_how(home: Path) -> None:
    result = run(home, "users", "passwd", "alice")
    assert result.exit_code == 2 and "--password-file or set CALLREC_PORTAL_PASSWORD" in result.output


# -- callrec portal -------------------------------------------------------------------------------


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    import click

    for bad in ("8080", "host:", ":80", "h:99999"):
        with pytest.raises(click.BadParameter):
            parse_listen(bad)


def test_the_portal_refuses_a_network_address_without_allow_remote(home: Path) -> None:
    result = run(home, "portal", "--listen", "0.0.0.0:8080")
    assert result.exit_code == 2 and "not a loopback address" in result.output


def test_only_an_operator_who_may_open_every_recording_starts_it(home: Path) -> None:
    result = run(home, "portal", "--listen", "127.0.0.1:0", as_user="alice")
    assert result.exit_code == 1 and "may not start the portal" in result.output
    assert audit_entries(home, action="portal.start")[-1].outcome == "denied"


def test_a_wrong_passphrase_stops_it_with_exit_code_78(home: Path, tmp_path: Path) -> None:
    from tests.helpers.keyset import keyset

    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    result = run(
        home,
        "portal",
        "--listen",
        "127.0.0.1:0",
        "--key",
        str(keyset().private_key),
        "--passphrase-file",
        str(wrong),
    )
    assert result.exit_code == 78 and "wrong passphrase" in result.output
    assert audit_entries(home, action="portal.start")[-1].outcome == "failed"
