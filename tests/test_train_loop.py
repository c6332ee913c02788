"""The training loop (soundtok.train.loop) on a one-layer recipe: a signal stops it cleanly and the rerun goes on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch

from soundtok.train.loop import LoopSettings, Recipe, StepOutput, run
from soundtok.train.state import latest_state


class Linear(Recipe):
    name = "linear-test"

    def __init__(self, signal_at: int | None = None) -> None:
        super().__init__(None)
        self.signal_at = signal_at
        self.seen: list[int] = []

    def setup(self, accelerator, run_dir: Path) -> None:  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        self.model, self.opt = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))

    def step(self, step: int) -> StepOutput:
        self.seen.append(step)
        if step == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler preempting the job would
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
        loss = (self.model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return StepOutput({"loss/total": loss.item()}, work=4)

    def export(self, accelerator, run_dir: Path, step: int) -> Path:  # type: ignore[no-untyped-def]
        out = run_dir / "export.pt"
        torch.save(self.model.state_dict(), out)
        return out


def test_sigterm_saves_a_state_and_the_rerun_goes_on(tmp_path: Path) -> None:
    settings = LoopSettings(steps=5, log_every=1, checkpoint_every=100)
    before = signal.getsignal(signal.SIGTERM)
    stopped = run(Linear(signal_at=1), tmp_path, settings)
    assert (stopped.steps, stopped.exported) == (2, None)  # the step in progress finished, then it stopped
    assert latest_state(tmp_path) is not None and latest_state(tmp_path)[0] == 2  # type: ignore[index]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back

    rest = Linear()
    finished = run(rest, tmp_path, settings)
    assert rest.seen == [2, 3, 4] and finished.exported is not None

    straight = Linear()
    run(straight, tmp_path / "straight", settings)
    resumed_weights = torch.load(finished.exported)
    straight_weights = torch.load(tmp_path / "straight" / "export.pt")
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in straight_weights)
