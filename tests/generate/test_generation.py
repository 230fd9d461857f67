"""Stage gen on a tiny random model: counts, lengths, EOS stopping, rewards, seeds, prompts validation.

The model's weights are random, so responses are gibberish: the tests check the mechanics (how many,
how long, where they stop, how they are rewarded and saved), not their quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import GenerateSpec, ModelSpec
from influence_trace.generate import prompts, verifier
from influence_trace.generate import sampling as generation
from influence_trace.io import model_io
from influence_trace.io.rollouts import read_rows, to_responses
from influence_trace.trace.ledger import MemoryLedger


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def three_prompts(tmp_path: Path) -> Path:
    rows = [{"prompt_id": f"q{i}", "prompt": f"what is {i} add {i}", "answer": str(2 * i)} for i in range(3)]
    return write_prompts(tmp_path / "prompts.jsonl", rows)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    spec = ModelSpec(path=str(tiny_model_dir), dtype="float32")
    return model_io.load_model(spec, "cpu"), model_io.load_tokenizer(spec)


def sample(loaded, prompts_file: Path, seed: int = 0, **settings) -> tuple[list[dict], list[int]]:
    """Generate and build rows the way the gen stage does; return (rows, eos ids)."""
    model, tokenizer = loaded
    gen = GenerateSpec(promptsPath=str(prompts_file), **settings)
    found = prompts.read_prompts(prompts_file, gen.reward_column)
    chat = prompts.uses_chat_template(tokenizer, gen.use_chat_template)
    ids = [prompts.prompt_token_ids(p, tokenizer, chat, model_io.vocab_size(model)) for p in found]
    eos = generation.eos_token_ids(model, tokenizer)
    made = generation.generate(model, ids, gen, seed, eos, tokenizer.pad_token_id, "cpu", MemoryLedger())
    return generation.rollout_rows(found, ids, made, tokenizer), eos


def test_counts_lengths_and_eos_stopping(loaded, tmp_path: Path) -> None:
    path = three_prompts(tmp_path)
    rows, eos = sample(loaded, path, responsesPerPrompt=5, maxResponseTokens=12, batchSize=4)
    assert len(rows) == 15
    assert [r["prompt_id"] for r in rows] == [f"q{i}" for i in range(3) for _ in range(5)]
    assert len({r["response_id"] for r in rows}) == 15
    for row in rows:
        ids = row["response_ids"]
        assert 1 <= len(ids) <= 12
        stops = [i for i, t in enumerate(ids) if t in eos]
        if row["finish_reason"] == "eos":
            assert stops == [len(ids) - 1]  # ends at, and includes, its first EOS
        else:
            assert stops == [] and len(ids) == 12
    reasons = {r["finish_reason"] for r in rows}
    assert reasons == {"eos", "length"}, "the tiny model should both stop early and hit the limit here"


def test_rewards_come_from_the_verifier(loaded, tmp_path: Path) -> None:
    rows, _ = sample(loaded, three_prompts(tmp_path), responsesPerPrompt=4, maxResponseTokens=10)
    for row in rows:
        assert row["reward"] == verifier.reward(row["response"], row["answer"])
        assert row["reward"] in (0.0, 1.0)


def test_reward_column_gives_graded_rewards(loaded, tmp_path: Path) -> None:
    table = {str(d): d / 10 for d in range(10)}  # every last digit earns its own reward
    rows = [{"prompt_id": "q", "prompt": "what is one add two", "credit": table}]
    path = write_prompts(tmp_path / "prompts.jsonl", rows)
    made, _ = sample(loaded, path, responsesPerPrompt=8, maxResponseTokens=16, rewardColumn="credit")
    for row in made:
        answer = verifier.extract_answer(row["response"])
        expected = table.get(verifier.normalize_answer(answer), 0.0) if answer else 0.0
        assert row["reward"] == pytest.approx(expected)


def test_same_seed_same_rollouts_other_seed_differs(loaded, tmp_path: Path) -> None:
    path = three_prompts(tmp_path)
    first, _ = sample(loaded, path, seed=3, responsesPerPrompt=4, maxResponseTokens=10)
    again, _ = sample(loaded, path, seed=3, responsesPerPrompt=4, maxResponseTokens=10)
    other, _ = sample(loaded, path, seed=4, responsesPerPrompt=4, maxResponseTokens=10)
    assert first == again
    assert [r["response_ids"] for r in first] != [r["response_ids"] for r in other]


def test_temperature_zero_is_greedy(loaded, tmp_path: Path) -> None:
    path = three_prompts(tmp_path)
    rows, _ = sample(loaded, path, responsesPerPrompt=3, maxResponseTokens=8, temperature=0)
    for i in range(3):
        group = [r["response_ids"] for r in rows if r["prompt_id"] == f"q{i}"]
        assert group[0] == group[1] == group[2]


def test_model_generation_defaults_do_not_leak(loaded, tmp_path: Path) -> None:
    """A generation_config.json with top_k=1 would make every sample the greedy one."""
    model, _ = loaded
    path = three_prompts(tmp_path)
    before, _ = sample(loaded, path, responsesPerPrompt=4, maxResponseTokens=10)
    model.generation_config.top_k = 1
    try:
        after, _ = sample(loaded, path, responsesPerPrompt=4, maxResponseTokens=10)
    finally:
        model.generation_config.top_k = None
    assert after == before
    assert len({tuple(r["response_ids"]) for r in after if r["prompt_id"] == "q0"}) > 1


def test_rows_read_back_with_the_rollouts_reader(loaded, tmp_path: Path) -> None:
    rows, _ = sample(loaded, three_prompts(tmp_path), responsesPerPrompt=2, maxResponseTokens=6)
    for fmt in ("parquet", "jsonl"):
        path = tmp_path / f"rollouts.{fmt}"
        generation.write_rollouts(path, rows, {"seed": 0}, fmt)
        responses = to_responses(read_rows(path), None, model_io.vocab_size(loaded[0]))
        assert [r.response_ids for r in responses] == [tuple(r["response_ids"]) for r in rows]
        assert [r.reward for r in responses] == [r["reward"] for r in rows]


def test_chat_template_applied_only_when_present_and_wanted(loaded, tmp_path: Path) -> None:
    model, tokenizer = loaded
    found = prompts.read_prompts(three_prompts(tmp_path))
    vocab = model_io.vocab_size(model)
    plain = prompts.prompt_token_ids(found[0], tokenizer, False, vocab)
    assert not prompts.uses_chat_template(tokenizer, True)  # the tiny tokenizer has no template
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}answer{% endif %}"
    )
    try:
        assert prompts.uses_chat_template(tokenizer, True)
        assert not prompts.uses_chat_template(tokenizer, False)
        chat = prompts.prompt_token_ids(found[0], tokenizer, True, vocab)
    finally:
        tokenizer.chat_template = None
    assert chat == (*plain, tokenizer.convert_tokens_to_ids("answer"))


def test_prompt_ids_are_used_as_given(loaded, tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "p.jsonl", [{"prompt_id": 1, "prompt_ids": [5, 6, 7], "answer": 3}])
    rows, _ = sample(loaded, path, responsesPerPrompt=2, maxResponseTokens=4)
    assert all(r["prompt_ids"] == [5, 6, 7] and r["prompt_id"] == "1" and r["answer"] == "3" for r in rows)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "x", "answer": "1"}], "line 1: missing prompt_id"),
        ([{"prompt_id": "a", "answer": "1"}], "line 1: missing prompt_ids"),
        ([{"prompt_id": "a", "prompt": "x"}], "line 1: missing answer"),
        ([{"prompt_id": "a", "prompt": "x", "answer": "1"}] * 2, "line 2: duplicate prompt_id 'a'"),
    ],
)
def test_prompt_errors_name_the_file_and_row(tmp_path: Path, rows: list[dict], message: str) -> None:
    path = write_prompts(tmp_path / "prompts.jsonl", rows)
    with pytest.raises(InvalidInput, match=message) as err:
        prompts.read_prompts(path)
    assert str(path) in str(err.value) and err.value.stage == "gen"


def test_reward_column_errors(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "p.jsonl", [{"prompt_id": "a", "prompt": "x", "credit": "nope"}])
    with pytest.raises(InvalidInput, match=r"line 1: credit must be a non-empty mapping"):
        prompts.read_prompts(path, "credit")
    with pytest.raises(InvalidInput, match="missing other"):
        prompts.read_prompts(path, "other")


def test_helpers() -> None:
    assert generation.cut_at_eos([4, 5, 2, 6, 2], [2]) == ((4, 5, 2), "eos")
    assert generation.cut_at_eos([4, 5], [2]) == ((4, 5), "length")
    assert generation.cut_at_eos([2], [2]) == ((2,), "eos")
    assert generation.plan(2, 3, 4) == [[(0, 0), (0, 1), (0, 2), (1, 0)], [(1, 1), (1, 2)]]
    seeds = {generation.batch_seed(s, b) for s in range(4) for b in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
