"""What explains a hang: the frames of captured stacks, and the incident analysis that
names the rank that hung. Pure code: it reads stack text, and runs no process."""

from .frames import Frame, StackFrames, parse_stack
from .incident import IncidentAnalysis, RankCapture, RankResult, analyse, rank_ranges

__all__ = [
    "Frame",
    "IncidentAnalysis",
    "RankCapture",
    "RankResult",
    "StackFrames",
    "analyse",
    "parse_stack",
    "rank_ranges",
]
