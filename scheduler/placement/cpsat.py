# The methods of CpModel and CpSolver below are adapted from OR-Tools 9.15.6755 ortools/sat/python/cp_model.py,
# Copyright 2010-2025 Google LLC, licensed under the Apache License, Version 2.0
# (http://www.apache.org/licenses/LICENSE-2.0).
"""CP-SAT models built without `ortools.sat.python.cp_model`, which imports pandas at module level (OR-Tools
9.15.6755, ortools/sat/python/cp_model.py: `import pandas as pd`, for its pandas-indexed variable sets): 34 MiB
of the extender's RSS that it never used (`clique bench extender --memory`, with nothing in its state). Pure.

`cp_model.CpModel` is a Python subclass of the C++ `cp_model_helper.CpBaseModel`, and `cp_model.CpSolver` a thin
wrapper of `cp_model_helper.SolveWrapper`; the classes here are the same subclass and wrapper, with the few
methods the placement engine and gang preemption use copied from that file (same OR-Tools version), so the model
proto and the solve are exactly cp_model's (tests/unit/test_cpsat.py builds both and compares the protos).
Expressions (`x * 3 + y <= 5`, `~x`, `sum(...)`) and `Constraint.only_enforce_if` are the C++ classes' own.
"""

from __future__ import annotations

import numbers
from typing import Any

from ortools.sat.python import cp_model_helper as cmh
from ortools.util.python.sorted_interval_list import Domain

IntVar = cmh.IntVar
LinearExpr = cmh.LinearExpr
Constraint = cmh.Constraint
OPTIMAL = cmh.CpSolverStatus.OPTIMAL
FEASIBLE = cmh.CpSolverStatus.FEASIBLE
INFEASIBLE = cmh.CpSolverStatus.INFEASIBLE


class CpModel(cmh.CpBaseModel):
    """The subset of cp_model.CpModel (OR-Tools 9.15) that Clique uses; same names, same protos."""

    def __init__(self) -> None:
        cmh.CpBaseModel.__init__(self, None)

    def new_int_var(self, lb: int, ub: int, name: str) -> IntVar:
        return IntVar(self.model_proto).with_name(name).with_domain(Domain(lb, ub))

    def new_bool_var(self, name: str) -> IntVar:
        return IntVar(self.model_proto).with_name(name).with_domain(Domain(0, 1))

    def add(self, ct: Any) -> Constraint:
        """A linear constraint (`expr <= k`, `a == b`, ...); a plain truth value (an expression without
        variables, e.g. an empty sum compared with a number) adds an always-true or never-true constraint."""
        if isinstance(ct, cmh.BoundedLinearExpression):
            return self._add_bounded_linear_expression(ct)
        if ct and self.is_boolean_value(ct):
            return self.add_bool_or([True])
        if not ct and self.is_boolean_value(ct):
            return self.add_bool_or([])  # evaluates to false
        raise TypeError(f"not supported: CpModel.add({type(ct).__name__!r})")

    def add_bool_or(self, *literals: Any) -> Constraint:
        return self._add_bool_argument_constraint(cmh.BoolArgumentConstraint.bool_or, *literals)

    def add_bool_and(self, *literals: Any) -> Constraint:
        return self._add_bool_argument_constraint(cmh.BoolArgumentConstraint.bool_and, *literals)

    def add_implication(self, a: Any, b: Any) -> Constraint:
        return self.add_bool_and(b).only_enforce_if(a)

    def minimize(self, obj: Any) -> None:
        """Minimise an integer linear expression (or a constant). Floating-point objectives are not used here."""
        proto = self.model_proto
        proto.clear_objective()
        proto.clear_floating_point_objective()
        if isinstance(obj, numbers.Integral):
            proto.objective.offset = int(obj)
            proto.objective.scaling_factor = 1.0
        elif isinstance(obj, LinearExpr) and obj.is_integer():
            flat = cmh.FlatIntExpr(obj)
            for var in flat.vars:
                proto.objective.vars.append(var.index)
            proto.objective.scaling_factor = 1.0
            proto.objective.offset = flat.offset
            proto.objective.coeffs.extend(flat.coeffs)
        else:
            raise TypeError(f"{type(obj).__name__!r} is not an integer objective")


class CpSolver:
    """cp_model.CpSolver's solve / value / status_name (OR-Tools 9.15), without callbacks."""

    def __init__(self) -> None:
        self.parameters = cmh.SatParameters()
        self._response: Any = None

    def solve(self, model: CpModel) -> Any:
        wrapper = cmh.SolveWrapper()
        wrapper.set_parameters(self.parameters)
        self._response = wrapper.solve(model.model_proto)
        return self._response.status

    def value(self, expression: Any) -> int:
        if self._response is None:
            raise RuntimeError("solve() has not been called")
        return cmh.ResponseHelper.value(self._response, expression)

    @staticmethod
    def status_name(status: Any) -> str:
        return status.name
