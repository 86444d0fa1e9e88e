"""Pattern rewriting: a fusion reads as "this subgraph becomes that node".

    from graphopt.rewrite import Const, Op, Rule, Var, apply_rules

    x, w, b = Var("x"), Const("w"), Const("b")
    rule = Rule("matmul-add", Op("Add", Op("MatMul", x, w), b), replace=..., check=...)
    apply_rules(graph, [rule], pass_name="fuse-matmul-add")

See pattern.py (patterns and matching), rule.py (Rule, Match, Rewriter), driver.py (apply_rules)
and log.py (FusionLog: what ran, and why a candidate was not rewritten).
"""
from graphopt.rewrite.driver import apply_rules
from graphopt.rewrite.log import FusionLog, FusionRecord, RuleStats, fusion_log, fusion_report
from graphopt.rewrite.pattern import Const, OneOf, Op, Opt, Pattern, Var
from graphopt.rewrite.rule import Match, ReplaceFunction, RewriteRefused, Rewriter, Rule

__all__ = ["apply_rules", "FusionLog", "FusionRecord", "RuleStats", "fusion_log", "fusion_report",
           "Const", "OneOf", "Op", "Opt", "Pattern", "Var", "Match", "ReplaceFunction",
           "RewriteRefused", "Rewriter", "Rule"]
