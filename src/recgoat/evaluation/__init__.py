"""Full-ranking evaluation: :class:`Evaluator` (vectorised, cached masks) and the metric functions."""
from recgoat.evaluation.evaluator import Evaluator, EvalResult

__all__ = ["Evaluator", "EvalResult"]
