"""Demo data: five queues, eight agents, thirty customers. Running it again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.agents.repository import AgentInfo, AgentRepository, QueueInfo
from callcenter.customers.model import CustomerTier
from callcenter.customers.repository import CustomerRepository

__all__ = [
    "DEMO_AGENTS",
    "DEMO_CUSTOMERS",
    "DEMO_QUEUES",
    "DemoCustomer",
    "SeedResult",
    "seed_demo_data",
]

DEMO_QUEUES: tuple[QueueInfo, ...] = (
    QueueInfo("bookings", "bookings", "rrmemory", 60, 0, "订单组 bookings and orders"),
    QueueInfo("complaints", "complaints", "rrmemory", 60, 0, "投诉组 complaints"),
    QueueInfo("general", "general", "leastrecent", 60, 0, "客服组 general service"),
    QueueInfo("technical", "technical", "fewestcalls", 60, 0, "技术支持 technical faults"),
    QueueInfo("operator", "operator", "ringall", 30, 5, "人工 operator"),
)

DEMO_AGENTS: tuple[AgentInfo, ...] = (
    AgentInfo("王芳", "PJSIP/1001", "bookings", ("product",)),
    AgentInfo("李娜", "PJSIP/1002", "bookings", ("all-round",)),
    AgentInfo("张伟", "PJSIP/1003", "complaints", ("all-round", "product")),
    AgentInfo("刘洋", "PJSIP/1004", "complaints", ("all-round",)),
    AgentInfo("陈静", "PJSIP/1005", "general", ("product",)),
    AgentInfo("Anna Schmidt", "PJSIP/1006", "general", ("all-round", "english")),
    AgentInfo("赵磊", "PJSIP/1007", "technical", ("technical",)),
    AgentInfo("孙强", "PJSIP/1008", "technical", ("technical", "all-round")),
)


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    name: str
    numbers: tuple[str, ...]
    tier: CustomerTier = "normal"
    company: str | None = None
    credit_grade: str | None = None
    language: str | None = None
    notes: str = ""
    do_not_call: bool = False


# Numbers deliberately written every way people write them; all normalise to distinct E.164 digits.
DEMO_CUSTOMERS: tuple[DemoCustomer, ...] = (
    DemoCustomer(
        "王建国",
        ("+86 138-0013-8000",),
        "key",
        "华东物流有限公司",
        "A",
        "zh",
        "大客户: 专人对接 (王芳)",
    ),
    DemoCustomer("李秀英", ("13900139001",), company="杭州美食坊", credit_grade="B"),
    DemoCustomer("张敏", ("0086 137 0013 7002", "021-62345678"), "key", "上海远航贸易", "A", "zh"),
    DemoCustomer("刘德明", ("86 136 0013 6003",), credit_grade="C"),
    DemoCustomer("陈晓燕", ("(0)135 0013 5004",), language="zh"),
    DemoCustomer("杨帆", ("+8615000150005",), company="成都天府软件", credit_grade="B"),
    DemoCustomer("黄丽", ("151-0015-1006",), do_not_call=True, notes="要求不再回访"),
    DemoCustomer("赵志强", ("010-87654321", "18600186007"), "key", "北京京华保险", "A", "zh"),
    DemoCustomer("周杰", ("187 0018 7008",)),
    DemoCustomer("吴婷婷", ("0755-26612345",), company="深圳前海银行", credit_grade="B"),
    DemoCustomer("徐磊", ("13300133010",)),
    DemoCustomer("孙丽华", ("+86 177 0017 7011",), credit_grade="D", notes="多次投诉配送延误"),
    DemoCustomer("马超", ("0086-158-0015-8012",), "key", "西北能源集团", "A"),
    DemoCustomer("朱小红", ("15900159013",), language="zh"),
    DemoCustomer("胡军", ("020 3888 1234",), company="广州南方快运"),
    DemoCustomer("郭静", ("18800188015",)),
    DemoCustomer("何伟", ("+86 (0)571 8765 4321",), company="杭州西湖茶业", credit_grade="C"),
    DemoCustomer("高峰", ("13100131017",)),
    DemoCustomer("林美玲", ("+86 139 1234 5678",), "key", "厦门海峡航运", "A", "zh"),
    DemoCustomer("罗斌", ("176-0017-6019",)),
    DemoCustomer(
        "John Smith",
        ("+44 20 7946 0020",),
        company="Smith & Partners Ltd",
        credit_grade="B",
        language="en",
    ),
    DemoCustomer("Maria Garcia", ("+34 912 345 021",), language="en"),
    DemoCustomer("David Miller", ("+1 (212) 555-0122",), "key", "Miller Logistics Inc.", "A", "en"),
    DemoCustomer("Sophie Martin", ("+33 1 42 68 53 23",), language="en"),
    DemoCustomer(
        "Peter Wang", ("13800138024", "+852 2345 6024"), company="Pacific Trade HK", language="en"
    ),
    DemoCustomer("Emily Chen 陈美琪", ("+86 135 2468 1025",), language="en"),
    DemoCustomer("Thomas Müller", ("+49 30 1234 5026",), credit_grade="B", language="en"),
    DemoCustomer("Yuki Tanaka", ("+81 3-1234-5027",), language="en"),
    DemoCustomer("欧阳娜娜", ("18900189028",), notes="常问发票问题"),
    DemoCustomer("司马光", ("0531-86012345",), "key", "济南泉城实业", "B", "zh"),
)


@dataclass(frozen=True, slots=True)
class SeedResult:
    queues: int
    agents: int
    customers_created: int
    tickets_created: int = 0


async def seed_demo_data(session_factory: async_sessionmaker[AsyncSession]) -> SeedResult:
    """Write the demo queues, agents and customers. Idempotent: queues and agents are upserted,
    a customer whose first number is already known is left alone."""
    agents = AgentRepository(session_factory=session_factory)
    customers = CustomerRepository(session_factory=session_factory)
    for queue in DEMO_QUEUES:
        await agents.save_queue(queue)
    for agent in DEMO_AGENTS:
        await agents.save_agent(agent)
    from callcenter.users.seed import seed_demo_users  # users.seed reads DEMO_AGENTS from here

    await seed_demo_users(session_factory)
    created = 0
    for demo in DEMO_CUSTOMERS:
        if await customers.find_by_number(demo.numbers[0]) is not None:
            continue
        await customers.create(
            name=demo.name,
            numbers=demo.numbers,
            tier=demo.tier,
            company=demo.company,
            credit_grade=demo.credit_grade,
            notes=demo.notes,
            preferred_language=demo.language,
            do_not_call=demo.do_not_call,
        )
        created += 1
    from callcenter.tickets.seed import seed_demo_tickets  # needs the users and customers above

    tickets = await seed_demo_tickets(session_factory)
    return SeedResult(
        queues=len(DEMO_QUEUES),
        agents=len(DEMO_AGENTS),
        customers_created=created,
        tickets_created=tickets,
    )
