"""Effectiveness metrics through ir-measures (trec_eval's definitions)."""

from __future__ import annotations

# Report name -> ir_measures name. MRR@10 is trec_eval's reciprocal rank cut at 10.
MEASURES = {
    "nDCG@10": "nDCG@10",
    "Recall@100": "R@100",
    "Recall@1000": "R@1000",
    "MRR@10": "RR@10",
}


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean of each measure over the queries of ``qrels`` (a query with no results scores 0).

    Args:
        run: ``{query_id: {doc_id: score}}``.
        qrels: ``{query_id: {doc_id: relevance}}``.
    """
    import ir_measures

    parsed = {name: ir_measures.parse_measure(spec) for name, spec in MEASURES.items()}
    totals = {name: 0.0 for name in MEASURES}
    by_measure = {measure: name for name, measure in parsed.items()}
    for metric in ir_measures.iter_calc(list(parsed.values()), qrels, run):
        totals[by_measure[metric.measure]] += metric.value
    judged = len(qrels)
    return {name: totals[name] / judged if judged else 0.0 for name in MEASURES}
