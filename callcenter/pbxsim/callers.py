"""Simulated callers: what they press at each prompt, when they hang up, who they are.

A `CallerModel` is plain data. `CallerFactory` draws varied callers from a seeded RNG, so the same
seed always yields the same population (names, number formats, VIPs, behaviour).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """Keys typed during one input prompt. `delay` counts from the start of the prompt."""

    digits: str
    delay: float = 1.0
    inter_digit: float = 0.4

    def times(self) -> list[tuple[float, str]]:
        return [(self.delay + i * self.inter_digit, d) for i, d in enumerate(self.digits)]


@dataclass(frozen=True, slots=True)
class IvrHangup:
    """Hang up during AGI command number `command` (0-based), `after` seconds into it.

    For commands that finish at once (SET VARIABLE, NOOP...) the hang-up happens right after the
    reply, while the FastAGI server is "thinking": Asterisk then sends the idle `HANGUP` line.
    """

    command: int
    after: float = 0.0


@dataclass(slots=True)
class CallerModel:
    """One caller. `keys[i]` answers the i-th input prompt (None or missing = no key, timeout)."""

    number: str
    name: str = ""
    language: str = "en"
    did: str = "5551000"
    keys: Sequence[KeyPlan | str | None] = ()
    ivr_hangup: IvrHangup | None = None
    #: seconds the caller waits in the queue before hanging up (None = until the queue times out)
    patience: float | None = None
    #: the caller ends the conversation after this many seconds (None = the agent ends it)
    talk_limit: float | None = None
    vip: bool = False
    dtmf_duration_ms: int = 120
    greeting: str = ""
    accountcode: str = ""

    def key_plan(self, index: int) -> KeyPlan | None:
        if index >= len(self.keys):
            return None
        k = self.keys[index]
        if k is None or isinstance(k, KeyPlan):
            return k
        return KeyPlan(k)


CHINESE_NAMES = (
    "张三",
    "李四",
    "王五",
    "李娜",
    "王芳",
    "刘洋",
    "陈静",
    "杨帆",
    "赵敏",
    "黄磊",
    "周杰",
    "吴霞",
    "徐明",
    "孙丽",
    "马超",
)
LATIN_NAMES = (
    "John Smith",
    "Maria Garcia",
    "Anna Müller",
    "Pierre Dubois",
    "Olga Ivanova",
    "James O'Brien",
    "Li Wei",
    "Fatima Zahra",
    "Kim Min-jun",
    "Lucas Silva",
)
GREETINGS = {
    "zh": ("你好，我想咨询一下我的订单。", "喂，你好，我的网络断了。", "您好，我要投诉。"),
    "en": ("Hello, I have a question about my invoice.", "Hi, my internet is down."),
    "ko": ("안녕하세요, 예약 문의드립니다.", "안녕하세요, 불만이 있습니다."),
}


def number_formats(rng: random.Random) -> str:
    """A caller number in one of the formats trunks deliver."""
    style = rng.randrange(6)
    mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    if style == 0:
        return mobile
    if style == 1:
        return "+86" + mobile
    if style == 2:
        return "0086" + mobile
    if style == 3:
        return f"0{rng.choice(['10', '21', '755'])}{rng.randrange(10**8):08d}"
    if style == 4:
        return f"1555{rng.randrange(10**7):07d}"
    return f"+1555{rng.randrange(10**7):07d}"


@dataclass(slots=True)
class CallerMix:
    """Probabilities of the behaviours drawn by `CallerFactory`."""

    chinese: float = 0.7
    anonymous: float = 0.05
    vip: float = 0.1
    hangup_in_ivr: float = 0.08
    no_key: float = 0.08
    invalid_key: float = 0.07
    abandon: float = 0.12
    caller_ends_talk: float = 0.5
    menu_keys: str = "123"
    vip_numbers: tuple[str, ...] = ()


class CallerFactory:
    """Seeded source of varied callers."""

    def __init__(self, *, seed: int = 0, mix: CallerMix | None = None, did: str = "5551000"):
        self.rng = random.Random(seed)
        self.mix = mix or CallerMix()
        self.did = did

    def next(self) -> CallerModel:
        rng, mix = self.rng, self.mix
        chinese = rng.random() < mix.chinese
        if rng.random() < mix.anonymous:
            name = ""
        else:
            name = rng.choice(CHINESE_NAMES if chinese else LATIN_NAMES)
        vip = rng.random() < mix.vip
        number = rng.choice(mix.vip_numbers) if vip and mix.vip_numbers else number_formats(rng)
        lang = "zh" if chinese else "en"
        keys: list[KeyPlan | str | None] = []
        for _ in range(3):
            r = rng.random()
            if r < mix.no_key:
                keys.append(None)
            elif r < mix.no_key + mix.invalid_key:
                keys.append(KeyPlan(rng.choice("0789*#"), delay=rng.uniform(0.5, 4.0)))
            else:
                keys.append(KeyPlan(rng.choice(mix.menu_keys), delay=rng.uniform(0.8, 6.0)))
        ivr_hangup = None
        if rng.random() < mix.hangup_in_ivr:
            ivr_hangup = IvrHangup(command=rng.randrange(1, 6), after=rng.uniform(0.2, 3.0))
        patience = rng.uniform(5.0, 90.0) if rng.random() < mix.abandon else None
        talk_limit = rng.uniform(20.0, 240.0) if rng.random() < mix.caller_ends_talk else None
        return CallerModel(
            number=number,
            name=name,
            language=lang,
            did=self.did,
            keys=keys,
            ivr_hangup=ivr_hangup,
            patience=patience,
            talk_limit=talk_limit,
            vip=vip,
            dtmf_duration_ms=rng.choice((80, 100, 120, 160)),
            greeting=rng.choice(GREETINGS[lang]),
        )
