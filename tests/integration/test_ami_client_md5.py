"""AmiClient MD5 login (Challenge, then Login with AuthType MD5 + Key) over real sockets.

Against the emulator (with transcript 03's challenge, so the Key is the transcript's), against a
server that refuses `Action: Challenge`, and through `Settings.ami_auth`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from ami_client_support import Recorder
from pydantic import ValidationError
from shared_asterisk import AMI_RAW

from callcenter.asterisk.ami import AmiClient, build_action
from callcenter.asterisk.errors import AmiLoginError
from callcenter.asterisk.message import AmiMessage
from callcenter.config import Settings
from callcenter.pbxsim.ami_server import AmiServer, AmiUser
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
CHALLENGE = 840959223  # transcript 03
KEY = "f8a8989d4e2eb589e0407d5baf228735"  # md5("840959223" + "s3cret"), transcript 03


def messages(stream: bytes) -> list[bytes]:
    """Cut a CRLF stream (after an optional banner) into whole messages."""
    if stream.startswith(b"Asterisk Call Manager/"):
        stream = stream.split(b"\r\n", 1)[1]
    return [m + b"\r\n\r\n" for m in stream.split(b"\r\n\r\n")[:-1]]


def same_ids(msg: bytes) -> bytes:
    return re.sub(rb"ActionID: [^\r]*", b"ActionID: *", msg)


@dataclass
class Tap:
    """A TCP relay that records both directions of every connection it carries."""

    target: int
    up: bytearray = field(default_factory=bytearray)  # client -> server
    down: bytearray = field(default_factory=bytearray)  # server -> client
    connections: int = 0
    port: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def drop(self) -> None:
        """Cut every relayed connection (the client sees a reset)."""
        for w in self.writers:
            w.transport.abort()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, seen: bytearray
        ) -> None:
            try:
                while data := await src.read(65536):
                    seen += data
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_w, self.up), pipe(up_r, writer, self.down), return_exceptions=True
        )


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    server = AmiServer(
        users={"callcenter": AmiUser(secret="s3cret")},
        challenge_source=lambda: CHALLENGE,
        auth_failure_delay=0.05,
    )
    emu = Emulator(config=EmulatorConfig(), server=server)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def tap(emulator: Emulator) -> AsyncIterator[Tap]:
    t = Tap(target=emulator.ami_address[1])
    await t.start()
    yield t
    await t.stop()


def md5_client(port: int, rec: Recorder, **kw: object) -> AmiClient:
    params: dict[str, object] = dict(
        host="127.0.0.1",
        port=port,
        username="callcenter",
        secret="s3cret",
        auth="md5",
        on_message=rec.on_message,
        on_disconnected=rec.on_disconnected,
        action_timeout=2.0,
        ping_interval=30.0,
        reconnect_min=0.02,
        reconnect_max=0.1,
    )
    params.update(kw)
    return AmiClient(**params)  # type: ignore[arg-type]


async def test_md5_login_wire_matches_transcript_03(
    tap: Tap, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    client = md5_client(tap.port, rec, events="off")  # transcript 03 logs in with Events: off
    await client.start()
    try:
        assert client.connected
        pong = await client.send_action("Ping")
        assert pong.get("Ping") == "Pong"
    finally:
        await client.close()
    sent = messages(bytes(tap.up))
    got = messages(bytes(tap.down))
    assert [m.split(b"\r\n", 1)[0] for m in sent[:2]] == [b"Action: Challenge", b"Action: Login"]
    assert f"Key: {KEY}\r\n".encode() in sent[1]
    assert bytes(tap.down).startswith(BANNER)
    if AMI_RAW.is_dir():  # byte for byte, ActionID values aside (ours are panoramisk's)
        app = messages((AMI_RAW / "03_md5_challenge_login.app.raw").read_bytes())
        ast = messages((AMI_RAW / "03_md5_challenge_login.ast.raw").read_bytes())
        assert [same_ids(m) for m in sent[:2]] == [same_ids(m) for m in app[:2]]
        assert [same_ids(m) for m in got[:2]] == [same_ids(m) for m in ast[:2]]
    # the secret never crossed the wire, and neither it nor the key reached the logs
    assert b"s3cret" not in tap.up and b"Secret:" not in tap.up
    assert "s3cret" not in caplog.text and KEY not in caplog.text


async def test_md5_login_again_after_a_link_drop(tap: Tap) -> None:
    rec = Recorder()
    client = md5_client(tap.port, rec, on_connected=rec.on_connected)
    await client.start()
    try:
        await rec.wait_for(lambda: rec.kinds().count("connected") == 1)
        tap.drop()
        await rec.wait_for(lambda: rec.kinds().count("connected") == 2)
        assert client.connected and tap.connections == 2
    finally:
        await client.close()
    firsts = [m.split(b"\r\n", 1)[0] for m in messages(bytes(tap.up))]
    assert firsts.count(b"Action: Challenge") == 2 and firsts.count(b"Action: Login") == 2
    assert b"Secret:" not in tap.up


async def test_md5_wrong_secret_stops_with_login_error(
    tap: Tap, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    client = md5_client(tap.port, rec, secret="not-the-secret")
    with pytest.raises(
        AmiLoginError, match=r"refused AMI login \(md5\).*Authentication failed"
    ) as e:
        await client.start()
    assert e.value.code == "ami_login_failed"
    await asyncio.sleep(0.3)  # several reconnect_min periods: no second attempt
    assert tap.connections == 1
    assert client.state == "stopped" and client.failure is e.value
    sent = messages(bytes(tap.up))
    assert [m.split(b"\r\n", 1)[0] for m in sent] == [b"Action: Challenge", b"Action: Login"]
    assert b"not-the-secret" not in tap.up
    assert "not-the-secret" not in caplog.text and "not-the-secret" not in str(e.value)
    await client.close()


async def test_md5_is_the_default_setting_and_env_selects_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CALLCENTER_AMI_AUTH", raising=False)
    assert Settings().ami_auth == "md5"
    monkeypatch.setenv("CALLCENTER_AMI_AUTH", "plain")
    assert Settings().ami_auth == "plain"
    monkeypatch.setenv("CALLCENTER_AMI_AUTH", "sha1")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValueError, match="auth"):
        AmiClient(host="h", port=1, username="u", secret="s", on_message=Recorder().on_message,
                  auth="sha1")  # type: ignore[arg-type]  # fmt: skip


async def test_login_action_repr_masks_credentials() -> None:
    login = build_action("Login", [("Username", "callcenter"), ("Secret", "s3cret"), ("Key", KEY)])
    assert "s3cret" not in repr(login) and KEY not in repr(login)
    assert "callcenter" in repr(login)
    # on the wire: Action, ActionID, then the fields in the order given
    lines = str(login).split("\r\n")
    assert [line.split(":", 1)[0] for line in lines if line] == [
        "Action", "ActionID", "Username", "Secret", "Key",
    ]  # fmt: skip


# -- a manager without MD5: refuses Action Challenge, accepts a plaintext Login ------------------


@dataclass
class NoMd5Manager:
    challenge_reply: str
    actions: list[dict[str, str]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode().split("\r\n")
                fields = dict(line.split(": ", 1) for line in lines if line)
                self.actions.append(fields)
                aid = ("ActionID", fields.get("ActionID", ""))
                action = fields["Action"]
                if action == "Challenge":
                    reply = [("Response", "Error"), aid, ("Message", self.challenge_reply)]
                    writer.write(AmiMessage(tuple(reply)).to_bytes())
                elif action == "Login" and fields.get("Secret") == "s3cret":
                    reply = [("Response", "Success"), aid, ("Message", "Authentication accepted")]
                    writer.write(AmiMessage(tuple(reply)).to_bytes())
                elif action in ("CoreShowChannels", "QueueStatus"):
                    start = [("Response", "Success"), aid, ("EventList", "start")]
                    done = [("Event", f"{action}Complete"), aid, ("EventList", "Complete")]
                    writer.write(AmiMessage(tuple(start)).to_bytes())
                    writer.write(AmiMessage((*done, ("ListItems", "0"))).to_bytes())
                else:
                    reply = [("Response", "Error"), aid, ("Message", "Authentication failed")]
                    writer.write(AmiMessage(tuple(reply)).to_bytes())
                    await writer.drain()
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


UNKNOWN_CHALLENGE = (
    "Invalid/unknown command: Challenge. Use Action: ListCommands to show available commands."
)


@pytest.mark.parametrize("refusal", [UNKNOWN_CHALLENGE, "Permission denied"])
async def test_server_without_challenge_gives_a_clear_error_and_no_login(refusal: str) -> None:
    manager = NoMd5Manager(challenge_reply=refusal)
    await manager.start()
    try:
        client = md5_client(manager.port, Recorder())
        with pytest.raises(AmiLoginError) as info:
            await client.start()
        text = str(info.value)
        assert "MD5" in text and refusal in text and "CALLCENTER_AMI_AUTH=plain" in text
        await asyncio.sleep(0.3)
        assert manager.connections == 1 and client.state == "stopped"
        assert [a["Action"] for a in manager.actions] == ["Challenge"]  # no Login, no secret
        await client.close()
    finally:
        await manager.stop()


async def test_from_settings_follows_ami_auth() -> None:
    manager = NoMd5Manager(challenge_reply=UNKNOWN_CHALLENGE)
    await manager.start()
    try:
        rec = Recorder()
        for auth in ("md5", "plain"):
            settings = Settings(ami_username="callcenter", ami_secret="s3cret", ami_auth=auth)
            client = AmiClient.from_settings(
                settings, address=("127.0.0.1", manager.port), on_message=rec.on_message
            )
            if auth == "md5":
                with pytest.raises(AmiLoginError, match="MD5"):
                    await client.start()
            else:
                await client.start()
                assert client.connected
            await client.close()
        assert [a["Action"] for a in manager.actions][:3] == [
            "Challenge",
            "Login",
            "CoreShowChannels",
        ]
        assert manager.actions[1]["Secret"] == "s3cret" and "AuthType" not in manager.actions[1]
    finally:
        await manager.stop()
