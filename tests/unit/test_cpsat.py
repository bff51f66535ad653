"""scheduler/placement/cpsat.py builds exactly the CP-SAT models OR-Tools' own cp_model builds (same proto, same
answer), so the placement engine and gang preemption decide as they did with cp_model, without its pandas."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

import scheduler.placement
from scheduler.placement import cpsat
from scheduler.placement.exact import solve_exact
from scheduler.placement.capacity import gang_capacity
from scheduler.placement.preemption import VictimPod, VictimUnit, reference_minimum
from tests.unit.placement_builders import gang, snapshot

# one step of a model: (kind, numbers); the same steps are replayed on both APIs
step = st.one_of(
    st.tuples(st.just("int"), st.integers(-3, 3), st.integers(0, 6)),
    st.tuples(st.just("bool")),
    st.tuples(st.just("linear"), st.lists(st.tuples(st.integers(0, 20), st.integers(-4, 4)), max_size=4),
              st.sampled_from(["<=", ">=", "=="]), st.integers(-5, 10), st.sampled_from([None, "on", "off"]),
              st.integers(0, 20)),
    st.tuples(st.just("or"), st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=3)),
    st.tuples(st.just("implies"), st.integers(0, 20), st.integers(0, 20)),
)


def _build(api, steps, objective):
    """The steps applied to a fresh model of `api` (cp_model or cpsat); variables are picked modulo their count."""
    m = api.CpModel()
    xs, bools = [m.new_bool_var("b0")], [0]
    for s in steps:
        kind = s[0]
        if kind == "int":
            xs.append(m.new_int_var(min(s[1], s[2]), max(s[1], s[2]), f"x{len(xs)}"))
        elif kind == "bool":
            bools.append(len(xs))
            xs.append(m.new_bool_var(f"b{len(xs)}"))
        elif kind == "linear":
            _, terms, op, rhs, enforce, lit = s
            expr = sum(xs[i % len(xs)] * c for i, c in terms)  # 0 (a plain int) when there are no terms
            ct = {"<=": lambda: expr <= rhs, ">=": lambda: expr >= rhs, "==": lambda: expr == rhs}[op]()
            c = m.add(ct)
            b = xs[bools[lit % len(bools)]]
            if enforce == "on":
                c.only_enforce_if(b)
            elif enforce == "off":
                c.only_enforce_if(~b)
        elif kind == "or":
            m.add_bool_or([xs[bools[i % len(bools)]] if pos else ~xs[bools[i % len(bools)]] for i, pos in s[1]])
        else:
            m.add_implication(xs[bools[s[1] % len(bools)]], xs[bools[s[2] % len(bools)]])
    m.minimize(sum(xs[i % len(xs)] * c for i, c in objective) + 3 if objective else 7)
    return m, xs


def _solve(api, m, xs):
    solver = api.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    status = solver.solve(m)
    values = [solver.value(x) for x in xs] if status in (api.OPTIMAL, api.FEASIBLE) else None
    return solver.status_name(status), values


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=25), st.lists(st.tuples(st.integers(0, 20), st.integers(-5, 5)), max_size=5))
def test_any_model_is_the_same_proto_and_gets_the_same_answer_as_with_cp_model(steps, objective):
    ours, our_vars = _build(cpsat, steps, objective)
    theirs, their_vars = _build(cp_model, steps, objective)
    assert str(ours.model_proto) == str(theirs.model_proto)
    assert _solve(cpsat, ours, our_vars) == _solve(cp_model, theirs, their_vars)


def test_a_floating_point_objective_is_refused_with_what_was_given():
    m = cpsat.CpModel()
    with pytest.raises(TypeError, match="not an integer objective"):
        m.minimize(m.new_bool_var("x") * 0.5)
    with pytest.raises(TypeError, match="CpModel.add"):
        m.add("x")


class _Recording:
    """Solver classes of both APIs that keep the text of every model they solve."""

    def __init__(self, api):
        self.models: list[str] = []
        seen = self.models

        class Solver(api.CpSolver):
            def solve(self, model, *args):
                seen.append(str(model.model_proto))
                return super().solve(model, *args)

        self.solver = Solver


def _with(api, fn):
    """fn() with the placement code building its models through `api` (cp_model or cpsat)."""
    rec = _Recording(api)
    shim = type("Api", (), {k: getattr(api, k) for k in ("CpModel", "IntVar", "OPTIMAL", "FEASIBLE", "INFEASIBLE")})
    shim.CpSolver = rec.solver
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scheduler.placement.exact, "cpsat", shim)
        mp.setattr(scheduler.placement, "cpsat", shim)  # preemption imports it from the package when it solves
        out = fn()
    return out, rec.models


def _cluster(seed: int):
    rng = random.Random(seed)
    used = {f"h{i:02d}": rng.choice([0, 0, 2, 4, 8]) for i in range(16)}
    units = [VictimUnit(f"p{h}", rng.choice([1, 5, 2000]), (VictimPod(f"d/p{h}", h, (g, 0, 0, 1)),))
             for h, g in used.items() if g]
    return snapshot(used), units


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([(2, 8), (4, 8), (3, 4), (6, 2)]),
       st.sampled_from(["leaf", "spine", None]))
def test_the_engine_and_preemption_solve_the_same_models_and_decide_the_same_as_with_cp_model(seed, shape, level):
    snap, units = _cluster(seed)
    g = gang(shape[0], shape[1], required=level)
    cap = gang_capacity(snap, g)
    hosts = list(cap.free)  # the candidates (hosts with a slot for the gang)

    def exact():
        r = solve_exact(snap, g, cap, hosts, time_budget_s=None)
        return r.assignments, r.cost, r.optimal, r.status

    def preempt():
        d = reference_minimum(snap, g, 1000, units)
        return d.fits, d.victims, d.places, d.cost

    solved = []
    for fn in (exact, preempt):
        ours, our_models = _with(cpsat, fn)
        theirs, their_models = _with(cp_model, fn)
        assert ours == theirs
        assert our_models == their_models
        solved.append(len(our_models))
    assert solved[0] == 1  # solve_exact did go through CP-SAT
