"""CustomerRepository, the IVR lookup adapter, agents/queues and the demo seed, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.agents.repository import AgentInfo, AgentRepository, QueueInfo
from callcenter.calls.model import CallbackRequest, CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.customers.repository import (
    CustomerHistory,
    CustomerLookupAdapter,
    CustomerNotFoundError,
    CustomerRepository,
    NumberInUseError,
)
from callcenter.customers.service import InvalidNumberError, normalise_number
from callcenter.db.seed import DEMO_AGENTS, DEMO_CUSTOMERS, DEMO_QUEUES, seed_demo_data
from callcenter.ivr.calendar import always_open
from callcenter.ivr.model import CustomerInfo, CustomerLookup
from callcenter.tickets.repository import TicketRepository


@pytest.fixture
def customers(session_factory: async_sessionmaker[AsyncSession]) -> CustomerRepository:
    return CustomerRepository(session_factory=session_factory)


@pytest.fixture
def agents(session_factory: async_sessionmaker[AsyncSession]) -> AgentRepository:
    return AgentRepository(session_factory=session_factory)


async def test_create_and_find_by_any_number_format(customers: CustomerRepository) -> None:
    created = await customers.create(
        name="王建国",
        numbers=["13800138000", "010-12345678"],
        tier="key",
        company="华东物流有限公司",
        credit_grade="A",
        notes="专人对接",
        preferred_language="zh",
    )
    assert created.id > 0
    assert created.is_key_customer
    assert [n.normalised for n in created.numbers] == ["8613800138000", "861012345678"]
    assert [n.raw for n in created.numbers] == ["13800138000", "010-12345678"]
    assert created.created_at is not None and created.created_at.tzinfo is UTC
    for written in [
        "+86 138-0013-8000",
        "13800138000",
        "008613800138000",
        "86 138 0013 8000",
        "(0)138 0013 8000",
        "+86 10 1234 5678",
        "(010) 12345678",
    ]:
        found = await customers.find_by_number(written)
        assert found is not None, written
        assert found == created
    assert await customers.find_by_number("13900139000") is None
    assert await customers.find_by_number("anonymous") is None
    assert await customers.find_by_number("") is None


async def test_a_number_belongs_to_one_customer(customers: CustomerRepository) -> None:
    first = await customers.create(name="李秀英", numbers=["13900139001"])
    with pytest.raises(NumberInUseError) as info:
        await customers.create(name="Someone Else", numbers=["+86 139 0013 9001"])
    assert info.value.customer_id == first.id
    assert await customers.count() == 1  # nothing half-saved
    second = await customers.create(name="张敏", numbers=["13700137002"])
    with pytest.raises(NumberInUseError):
        await customers.attach_numbers(second.id, ["0086 139 0013 9001"])


async def test_racing_for_one_number_gives_a_clear_error(customers: CustomerRepository) -> None:
    a = await customers.create(name="周杰", numbers=["18700187008"])
    b = await customers.create(name="徐磊", numbers=["13300133010"])
    results = await asyncio.gather(
        customers.attach_numbers(a.id, ["+86 159 0015 9013"]),
        customers.attach_numbers(b.id, ["15900159013"]),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], NumberInUseError)
    owner = await customers.find_by_number("15900159013")
    assert owner is not None and owner.id in {a.id, b.id}


async def test_attach_and_detach_numbers(customers: CustomerRepository) -> None:
    c = await customers.create(name="John Smith", numbers=["+44 20 7946 0020"])
    c = await customers.attach_numbers(c.id, ["13600136003", "+86 136 0013 6003"])
    c = await customers.attach_numbers(c.id, ["136-0013-6003"])  # already there: no-op
    assert [n.normalised for n in c.numbers] == ["442079460020", "8613600136003"]
    assert (await customers.find_by_number("0044 20 7946 0020")) == c
    c = await customers.detach_number(c.id, "+8613600136003")
    assert [n.normalised for n in c.numbers] == ["442079460020"]
    assert await customers.find_by_number("13600136003") is None
    with pytest.raises(InvalidNumberError):
        await customers.attach_numbers(c.id, ["not a number"])
    with pytest.raises(CustomerNotFoundError):
        await customers.attach_numbers(999_999, ["13600136003"])


async def test_update_and_mark_key_customer(customers: CustomerRepository) -> None:
    c = await customers.create(name="刘德明", numbers=["13600136004"])
    assert not c.is_key_customer and c.tier == "normal"
    updated = await customers.update(
        c.id,
        {"name": " 刘德明 ", "credit_grade": "B", "do_not_call": True, "preferred_language": "en"},
    )
    assert updated.name == "刘德明" and updated.credit_grade == "B" and updated.do_not_call
    assert updated.updated_at is not None and c.updated_at is not None
    assert updated.updated_at >= c.updated_at
    key = await customers.mark_key_customer(c.id)
    assert key.is_key_customer
    assert (await customers.get(c.id)) == key
    assert not (await customers.mark_key_customer(c.id, key=False)).is_key_customer
    with pytest.raises(ValueError):
        await customers.update(c.id, {"tier": "vip"})  # type: ignore[typeddict-item]
    with pytest.raises(ValueError):
        await customers.update(c.id, {"name": "   "})
    with pytest.raises(ValueError, match="cannot change id"):
        await customers.update(c.id, {"id": 7})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(CustomerNotFoundError):
        await customers.mark_key_customer(424242)


async def test_search_list_and_delete(customers: CustomerRepository) -> None:
    a = await customers.create(name="陈晓燕", numbers=["13500135004"], company="杭州美食坊")
    b = await customers.create(name="Maria Garcia", numbers=["+34 912 345 021"], tier="key")
    assert await customers.search("晓燕") == [a]
    assert await customers.search("美食") == [a]
    assert await customers.search("maria") == [b]  # case-insensitive
    assert await customers.search("135 0013 5004") == [a]  # by number, any format
    assert await customers.search("100%_") == []  # LIKE wildcards are escaped
    assert await customers.list_customers(tier="key") == [b]
    assert await customers.count(tier="normal") == 1
    assert [c.id for c in await customers.list_customers(limit=1, offset=1)] == [b.id]
    assert await customers.delete(a.id) is True
    assert await customers.delete(a.id) is False
    assert await customers.find_by_number("13500135004") is None


async def test_bad_input_is_refused(customers: CustomerRepository) -> None:
    with pytest.raises(ValueError):
        await customers.create(name="")
    with pytest.raises(InvalidNumberError):
        await customers.create(name="x", numbers=["<unknown>"])
    with pytest.raises(TypeError):
        await customers.create(name="x", numbers="13800138000")
    with pytest.raises(ValueError):
        await customers.create(name="x", tier="gold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="credit_grade"):
        await customers.create(name="x", credit_grade="AAAAAAAAA")
    with pytest.raises(InvalidNumberError):
        await customers.create(name="x", numbers=["1" * 81])
    with pytest.raises(ValueError):
        await customers.list_customers(limit=0)
    assert await customers.count() == 0
    c = await customers.create(name="x")
    with pytest.raises(ValueError, match="preferred_language"):
        await customers.update(c.id, {"preferred_language": "x" * 17})


async def test_lookup_adapter_serves_the_ivr(customers: CustomerRepository) -> None:
    c = await customers.create(
        name="David Miller", numbers=["+1 (212) 555-0122"], tier="key", preferred_language="en"
    )
    lookup: CustomerLookup = CustomerLookupAdapter(repository=customers)
    assert await lookup.lookup("0012125550122") == CustomerInfo(
        customer_id=str(c.id), name="David Miller", is_key_customer=True, language="en"
    )
    assert await lookup.lookup("13800000000") is None
    assert await lookup.lookup("anonymous") is None


async def test_queues_and_agents(agents: AgentRepository) -> None:
    await agents.save_queue(QueueInfo("general", "general", "leastrecent", 60, 0, "客服组"))
    await agents.save_queue(QueueInfo("general", "general", "ringall", 45, 1, "客服组"))
    assert await agents.list_queues() == [
        QueueInfo("general", "general", "ringall", 45, 1, "客服组")
    ]
    assert await agents.get_queue("nope") is None
    with pytest.raises(ValueError):
        await agents.save_queue(QueueInfo("x", "sales", "ringall"))  # type: ignore[arg-type]

    saved = await agents.save_agent(AgentInfo("王芳", "PJSIP/1001", "bookings", ("technical",)))
    assert saved.id is not None and saved.created_at is not None
    again = await agents.save_agent(
        AgentInfo("王芳", "PJSIP/1001", "general", ("all-round", "product-knowledge"))
    )
    assert again.id == saved.id and again.group == "general"
    assert again.skills == ("all-round", "product-knowledge")
    await agents.save_agent(AgentInfo("赵磊", "PJSIP/1007", "technical", ("technical",)))
    assert [a.interface for a in await agents.list_agents()] == ["PJSIP/1001", "PJSIP/1007"]
    assert [a.name for a in await agents.list_agents(group="technical")] == ["赵磊"]
    assert await agents.set_active("PJSIP/1007", False) is True
    assert await agents.set_active("PJSIP/9999", False) is False
    assert [a.name for a in await agents.list_agents(active=True)] == ["王芳"]
    assert (await agents.get_agent_by_name("赵磊")) == await agents.get_agent("PJSIP/1007")
    with pytest.raises(ValueError, match="already used"):
        await agents.save_agent(AgentInfo("王芳", "PJSIP/1002", "general"))


async def test_seed_is_idempotent(session_factory: async_sessionmaker[AsyncSession]) -> None:
    first = await seed_demo_data(session_factory)
    second = await seed_demo_data(session_factory)
    assert first.customers_created == len(DEMO_CUSTOMERS) >= 30
    assert second.customers_created == 0
    customers = CustomerRepository(session_factory=session_factory)
    agents = AgentRepository(session_factory=session_factory)
    assert await customers.count() == len(DEMO_CUSTOMERS)
    assert await customers.count(tier="key") >= 5
    assert {q.name for q in await agents.list_queues()} == {q.name for q in DEMO_QUEUES}
    assert len(await agents.list_agents()) == len(DEMO_AGENTS) == 8
    assert {a.group for a in await agents.list_agents()} >= {
        "bookings",
        "complaints",
        "general",
        "technical",
    }
    wang = await customers.find_by_number("13800138000")
    assert wang is not None and wang.name == "王建国" and wang.is_key_customer


def test_demo_numbers_are_valid_and_distinct() -> None:
    normalised = [normalise_number(n) for c in DEMO_CUSTOMERS for n in c.numbers]
    assert all(normalised)
    assert len(set(normalised)) == len(normalised)


# A foreign number whose canonical digits read as a Chinese mobile when parsed again:
# "+1 312 555 0100" -> "13125550100", but the national "13125550100" -> "8613125550100".
CHICAGO = "+1 312 555 0100"


async def test_a_known_foreign_caller_is_found_not_created_again(
    customers: CustomerRepository,
) -> None:
    office = await customers.create(name="Chicago office", numbers=[CHICAGO])
    found, created = await customers.find_or_create_provisional("+13125550100")
    assert (found, created) == (office, False)
    assert await customers.find_by_normalised("13125550100") == office
    assert await customers.find_by_normalised("8613125550100") is None
    # the Chinese mobile with the same digits is another caller
    mobile, created = await customers.find_or_create_provisional("131 2555 0100")
    assert created and mobile.provisional and mobile.id != office.id
    assert [n.normalised for n in mobile.numbers] == ["8613125550100"]


async def test_a_stored_number_sent_back_as_it_is_is_detached(
    customers: CustomerRepository,
) -> None:
    """A client sends back a number as the API showed it (its canonical key): "13125550100",
    the +1 number, not the Chinese mobile those digits would be read as."""
    office = await customers.create(name="Chicago office", numbers=[CHICAGO, "13800138000"])
    keys = sorted(n.normalised for n in office.numbers)
    assert "13125550100" in keys
    office = await customers.detach_number(office.id, "13125550100")
    assert [n.normalised for n in office.numbers] == [k for k in keys if k != "13125550100"]
    office = await customers.detach_number(office.id, "138 0013 8000")  # any format still works
    assert not office.numbers


async def test_history_finds_the_calls_of_every_number(
    session_factory: async_sessionmaker[AsyncSession], customers: CustomerRepository
) -> None:
    calls = CallRepository(session_factory=session_factory)
    history = CustomerHistory(
        customers=customers,
        calls=calls,
        session_factory=session_factory,
        tickets=TicketRepository(
            session_factory=session_factory,
            calendar=always_open("Asia/Shanghai"),
            clock=lambda: datetime.now(UTC),
        ),
    )
    office = await customers.create(name="Chicago office", numbers=[CHICAGO, "13800138000"])
    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    callers = {"1.1": "+13125550100", "1.2": "+86 138 0013 8000", "1.3": "13125550100"}
    await calls.save_calls(
        [
            CallRecord(uniqueid=u, linkedid=u, channel="PJSIP/t-1", started_at=at, caller_number=n)
            for u, n in callers.items()
        ]
    )
    await calls.record_callback(CallbackRequest("1.1", "+1 312 555 0100", at, "support"))
    entries = await history.timeline(office.id)
    assert sorted(e.ref for e in entries if e.kind == "call") == ["1.1", "1.2"]
    assert [e.ref for e in entries if e.kind == "callback"] == ["1.1"]
    assert await calls.count_calls(caller_normalised="13125550100") == 1
    assert await calls.count_calls(caller_normalised="8613125550100") == 1
    listed = await calls.list_calls(caller_normalised="13125550100")
    assert [c.uniqueid for c in listed] == ["1.1"]
