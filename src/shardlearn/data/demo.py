"""Synthetic loan applications: the demo dataset (and a realistic dirty CSV for tests).

Each row is a loan application: numeric fields (age, income, loan amount, term, interest rate,
credit score, debt ratio, years employed, open accounts), skewed categoricals (purpose, region,
employment type, home ownership), a short free-text description, some missing values, and a
label ``default`` (yes/no). The label follows a known *nonlinear* rule — thresholds and
interactions (high debt ratio AND low credit score, loan-to-income above a cut-off, small
business loans of the self-employed, ...) — plus noise, so tree models beat linear ones.

About 0.5% of the CSV lines are malformed on purpose (a truncated line, an extra field, text in
a numeric column, a missing label), which ingest must reject with their line numbers.
Everything is vectorised NumPy/Arrow and deterministic for a seed: 1M rows take seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["LABEL", "default_probability", "generate_loans", "write_loans_csv"]

LABEL = "default"
CHUNK_ROWS = 250_000
MISSING_RATE = 0.03  # per nullable column
MALFORMED_RATE = 0.005

PURPOSES = (
    ("debt_consolidation", 0.42), ("credit_card", 0.20), ("home_improvement", 0.10),
    ("car", 0.08), ("medical", 0.05), ("small_business", 0.05), ("education", 0.04),
    ("vacation", 0.03), ("wedding", 0.02), ("moving", 0.01),
)  # fmt: skip
REGIONS = tuple(f"region_{i:02d}" for i in range(12))
EMPLOYMENT = (
    ("salaried", 0.60), ("self_employed", 0.14), ("contract", 0.12),
    ("part_time", 0.09), ("unemployed", 0.05),
)  # fmt: skip
HOME = (("mortgage", 0.44), ("rent", 0.41), ("own", 0.12), ("other", 0.03))
_OPENERS = np.array(["Need a loan", "Looking for money", "Request", "Asking for funds", "Loan"])
_PHRASES = {
    "debt_consolidation": "to consolidate my debts",
    "credit_card": "to pay off credit cards",
    "home_improvement": "to renovate the kitchen",
    "car": "to buy a used car",
    "medical": "for medical bills",
    "small_business": "to grow my small business",
    "education": "for tuition fees",
    "vacation": "for a family vacation",
    "wedding": "to pay for our wedding",
    "moving": "to move to a new city",
}
_CLOSERS = np.array(["", "asap", "thanks", "stable job", "first loan", "can repay early"])


def _choice(rng: np.random.Generator, pairs: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    names = np.array([p[0] for p in pairs])
    weights = np.array([p[1] for p in pairs])
    return names[rng.choice(len(names), n, p=weights / weights.sum())]


def default_probability(
    age: np.ndarray,
    income: np.ndarray,
    loan_amount: np.ndarray,
    term_months: np.ndarray,
    interest_rate: np.ndarray,
    credit_score: np.ndarray,
    debt_ratio: np.ndarray,
    purpose: np.ndarray,
    employment: np.ndarray,
    home: np.ndarray,
) -> np.ndarray:
    """The known rule: probability of default from thresholds and interactions."""
    loan_to_income = loan_amount / income
    score = (
        -2.6
        + 2.4 * ((debt_ratio > 0.45) & (credit_score < 640))
        + 1.7 * (loan_to_income > 0.45)
        + 1.4 * ((purpose == "small_business") & np.isin(employment, ["self_employed", "contract"]))
        + 1.6 * (employment == "unemployed")
        + 0.9 * ((age < 25) & (home == "rent"))
        + 0.8 * ((term_months == 60) & (interest_rate > 15.0))
        - 1.2 * (credit_score > 760)
        + 0.5 * np.sin(debt_ratio * 12.0)
    )
    return 1.0 / (1.0 + np.exp(-score))


def generate_loans(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` clean loan applications (with missing values, without malformed rows)."""
    rng = np.random.default_rng([seed, rows])
    age = np.clip(rng.normal(41, 12, rows), 18, 80).astype(np.int64)
    income = np.round(np.exp(rng.normal(10.9, 0.5, rows)), -2)
    loan_amount = np.round(income * rng.lognormal(-1.4, 0.6, rows), -2).clip(500, None)
    term_months = rng.choice([12, 24, 36, 48, 60], rows, p=[0.08, 0.17, 0.45, 0.1, 0.2])
    credit_score = np.clip(rng.normal(685, 70, rows), 300, 850).astype(np.int64)
    interest_rate = np.round(np.clip(30 - credit_score / 35 + rng.normal(0, 2, rows), 3, 29), 2)
    debt_ratio = np.round(rng.beta(2.2, 4.5, rows), 3)
    years_employed = np.round(rng.exponential(6, rows), 1)
    open_accounts = rng.poisson(5, rows)
    purpose = _choice(rng, PURPOSES, rows)
    zipf = 1.0 / np.arange(1, len(REGIONS) + 1) ** 1.1
    region = np.array(REGIONS)[rng.choice(len(REGIONS), rows, p=zipf / zipf.sum())]
    employment = _choice(rng, EMPLOYMENT, rows)
    home = _choice(rng, HOME, rows)
    probability = default_probability(
        age, income, loan_amount, term_months, interest_rate, credit_score, debt_ratio,
        purpose, employment, home,
    )  # fmt: skip
    label = np.where(rng.random(rows) < probability, "yes", "no")
    phrase_of = np.array([_PHRASES[name] for name, _ in PURPOSES])
    order = np.argsort([name for name, _ in PURPOSES])
    sorted_names = np.array([name for name, _ in PURPOSES])[order]
    phrases = phrase_of[order][np.searchsorted(sorted_names, purpose)]
    description = pc.binary_join_element_wise(
        pa.array(_OPENERS[rng.integers(0, len(_OPENERS), rows)]),
        pa.array(phrases),
        pa.array(_CLOSERS[rng.integers(0, len(_CLOSERS), rows)]),
        " ",
    )
    table = pa.table(
        {
            "age": age,
            "income": income,
            "loan_amount": loan_amount,
            "term_months": term_months,
            "interest_rate": interest_rate,
            "credit_score": credit_score,
            "debt_ratio": debt_ratio,
            "years_employed": years_employed,
            "open_accounts": open_accounts,
            "purpose": purpose,
            "region": region,
            "employment_type": employment,
            "home_ownership": home,
            "description": pc.utf8_trim_whitespace(description),
            LABEL: label,
        }
    )
    for name in ("income", "years_employed", "employment_type", "description"):
        missing = pa.array(rng.random(rows) < MISSING_RATE)
        column = table.column(name)
        table = table.set_column(
            table.schema.get_field_index(name),
            name,
            pc.if_else(missing, pa.scalar(None, column.type), column),
        )
    return table


def _corrupt(lines: list[bytes], rng: np.random.Generator) -> None:
    """Make about MALFORMED_RATE of the data lines malformed, in four different ways."""
    picked = np.flatnonzero(rng.random(len(lines)) < MALFORMED_RATE)
    for position, kind in zip(
        picked.tolist(), rng.integers(0, 4, len(picked)).tolist(), strict=True
    ):
        fields = lines[position].split(b",")
        if kind == 0:  # truncated line
            lines[position] = b",".join(fields[: max(1, len(fields) // 2)])
        elif kind == 1:  # an extra field
            lines[position] = lines[position] + b",extra"
        elif kind == 2:  # text in a numeric column (income is the second field)
            fields[1] = b"unknown"
            lines[position] = b",".join(fields)
        else:  # missing label
            fields[-1] = b""
            lines[position] = b",".join(fields)


def write_loans_csv(path: str | os.PathLike[str], rows: int, seed: int = 0) -> Path:
    """Write ``rows`` loan applications (≈0.5% malformed lines) to a CSV file, chunk by chunk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    with path.open("wb") as handle:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, rows - start)
            table = generate_loans(count, seed * 1_000_003 + chunk)
            sink = pa.BufferOutputStream()
            pacsv.write_csv(table, sink, options)
            text = sink.getvalue().to_pybytes()
            if chunk == 0:
                header, _, text = text.partition(b"\n")
                handle.write(header + b"\n")
                options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
            lines = text.rstrip(b"\n").split(b"\n")
            _corrupt(lines, np.random.default_rng([seed, chunk, 7]))
            handle.write(b"\n".join(lines) + b"\n")
    return path
