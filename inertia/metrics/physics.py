"""physics: exact test-bed metrics, from ball centroids parsed by colour (no weights).

For a video of the test-bed backbone generated from a prompt alone, the simulator's truth is
the clip that prompt commands from the same seed (`testbed.data.commanded_spec`): the same first
frame the model was given and the exact continuation. Velocity and position errors are measured
against it. A history-mode run (`history_frames` K) is scored on the frames after its history,
K-1.., against the continuation's commanded part (`testbed.data.run_truth`). For any other video
(an image given, or another backbone) the prompt's commands
still decide motion, static death, direction and integrity, and the errors are left empty.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..core.errors import InertiaError
from ..core.metric import Metric, VideoSample

OVERALL = ("static_death", "moved", "direction_correct", "integrity_ok", "correct_and_intact", "velocity_error",
           "position_error")


class Physics(Metric):
    name = "physics"
    description = "test bed: ball motion parsed from colour vs the commanded motion and the simulator's truth"
    weights = None
    needs_prompt = True
    outputs = {
        "static_death": "a motion was commanded and some ball did not move",
        "moved": "some ball moved (or left the frame)",
        "direction_correct": "every ball moved the commanded way",
        "integrity_ok": "every ball kept its size and stayed one piece (unless commanded to leave)",
        "correct_and_intact": "every ball moved the commanded way and stayed intact: a correct video",
        "velocity_error": "mean |parsed - true| velocity, px/frame (test-bed runs from a prompt only)",
        "position_error": "mean centroid distance to the truth, px (test-bed runs from a prompt only)",
        "balls": "the same per ball, keyed by colour, with the parsed mean velocity and pixel counts",
    }

    def check_prompt(self, prompt: str) -> None:
        super().check_prompt(prompt)
        from ..testbed.simulator import parse_prompt

        try:
            parse_prompt(prompt)
        except ValueError as error:
            raise InertiaError(f"metric physics needs a test-bed prompt (e.g. 'the red ball jumps'): {error}") from None

    def score(self, video: VideoSample) -> dict[str, Any]:
        from ..testbed.physics import analyse
        from ..testbed.simulator import parse_prompt

        self.check_prompt(video.prompt)
        start, truth = self._truth(video)
        result = analyse(video.frames[start:], parse_prompt(video.prompt), truth=truth)
        return {**{key: result["overall"][key] for key in OVERALL}, "balls": result["balls"]}

    @staticmethod
    def _truth(video: VideoSample):
        """(first scored frame, the simulator clip of the scored frames) when the record says the run came
        from a prompt alone (history mode: the frames after the history), else (0, None)."""
        config: Mapping[str, Any] = video.record.get("config", {})
        if config.get("backbone") != "testbed" or config.get("image") is not None or "seed" not in config:
            return 0, None
        from ..testbed.data import run_truth

        frames, height, width = video.frames.shape[:3]
        return run_truth(video.prompt, int(config["seed"]), num_frames=frames, height=height, width=width,
                         history_frames=config.get("history_frames"))
