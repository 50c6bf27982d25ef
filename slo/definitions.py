"""SLO and business-service definitions: YAML in, checked objects out.

The format follows OpenSLO's shape where it fits (``apiVersion``/``kind``/
``metadata``/``spec``, ``timeWindow`` with ``duration``, ``isRolling`` and a
``calendar`` time zone), in one or more YAML documents per file::

    apiVersion: tierscope/v1
    kind: SLO
    metadata: {name: post-invoice-latency, displayName: Post invoice under 2 s}
    spec:
      service: erp-web
      bt: ERP / Post invoice
      objective: latency
      threshold: 2s
      target: 95%

A mistake in an SLO file must not silently change what is reported for a
month, so :func:`parse` reports every problem at once, each as
``FILE:LINE: field: what is wrong``. Values are checked by pydantic models; the
line of each field comes from the YAML node tree, kept beside the values.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import holidays
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tierscope.config import parse_duration
from tierscope.slo.calendar import BusinessCalendar
from tierscope.slo.located import DefinitionError, Problem, compose, line_of, plain, problems_of

API_VERSION = "tierscope/v1"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
OBJECTIVES = ("latency", "availability", "apdex")
CRITICALITIES = ("critical", "high", "medium", "low")
DEFAULT_WINDOW = timedelta(days=28)
LONGEST_ROLLING_WINDOW = timedelta(days=90)  # hour rollups are kept 90 days by default
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_MAX_FILE_BYTES = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Strict):
    name: str = Field(max_length=63)
    displayName: str | None = Field(default=None, max_length=200)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use lower-case letters, digits, '-', '_' or '.', from a letter or digit")
        return value


class Calendar(_Strict):
    timeZone: str = "UTC"
    # OpenSLO's anchor of a calendar window. tierscope aligns windows to the
    # month or the Monday in the time zone, so a start must be such a midnight.
    startTime: datetime | None = None

    @field_validator("timeZone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _time_zone(value)


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
    return value


class TimeWindow(_Strict):
    """Rolling (``duration: 28d``) or calendar (``duration: 1M`` or ``1w``, ``isRolling: false``)."""

    duration: str = "28d"
    isRolling: bool = True
    calendar: Calendar | None = None

    @model_validator(mode="after")
    def _shape(self) -> TimeWindow:
        if self.isRolling:
            if self.calendar is not None:
                raise ValueError("a rolling window has no calendar; set isRolling: false for a calendar one")
            try:
                length = parse_duration(self.duration)
            except ValueError as exc:
                raise ValueError(f"duration: {exc}") from None
            if not timedelta(hours=1) <= length <= LONGEST_ROLLING_WINDOW:
                raise ValueError("duration: a rolling window is from 1h to 90d long")
        elif self.duration not in ("1M", "1w"):
            raise ValueError("duration: a calendar window is 1M (a month) or 1w (a week, from Monday)")
        elif self.calendar is not None and (start := self.calendar.startTime) is not None:
            aligned = (start.day == 1) if self.duration == "1M" else (start.weekday() == 0)
            if start.time() != time(0) or not aligned:
                raise ValueError(
                    "calendar: startTime must be local midnight of a month's first day (1M) or of a "
                    "Monday (1w): windows follow the calendar in the time zone"
                )
        return self

    @property
    def kind(self) -> str:
        return "rolling" if self.isRolling else ("month" if self.duration == "1M" else "week")

    @property
    def time_zone(self) -> str:
        return self.calendar.timeZone if self.calendar else "UTC"

    def describe(self) -> dict[str, Any]:
        if self.isRolling:
            return {"kind": "rolling", "duration": self.duration}
        return {"kind": "calendar", "duration": self.duration, "time_zone": self.time_zone}


class SLOSpec(_Strict):
    description: str | None = Field(default=None, max_length=1000)
    service: str | None = Field(default=None, min_length=1, max_length=256)
    bt: str | None = Field(default=None, min_length=1, max_length=512)
    businessService: str | None = Field(default=None, min_length=1, max_length=63)
    objective: Literal["latency", "availability", "apdex"]
    threshold: str | None = None
    target: float
    timeWindow: TimeWindow = Field(default_factory=TimeWindow)
    budgetingMethod: Literal["Occurrences"] = "Occurrences"  # OpenSLO's name for counting events

    @field_validator("timeWindow", mode="before")
    @classmethod
    def _one_window(cls, value: Any) -> Any:
        # OpenSLO writes timeWindow as a list of one window.
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> float:
        if isinstance(value, str) and (match := _PERCENT.match(value)):
            value = round(float(match[1]) / 100, 12)  # 99.9 / 100 is 0.9990000000000001
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"expected a ratio from 0 to 1 (0.999) or a percentage (99.9%); got {value!r}")
        return float(value)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                seconds = parse_duration(value).total_seconds()
            except ValueError as exc:
                raise ValueError(str(exc)) from None
            if seconds <= 0:
                raise ValueError("must be more than 0")
        return value

    @model_validator(mode="after")
    def _subject(self) -> SLOSpec:
        if self.businessService is None and (self.service is None or self.bt is None):
            raise ValueError("give service and bt (one business transaction) or businessService")
        if self.businessService is not None and (self.service is not None or self.bt is not None):
            raise ValueError("give either service and bt, or businessService, not both")
        if (self.objective == "latency") != (self.threshold is not None):
            raise ValueError("a latency objective needs a threshold (e.g. 2s); the others take none")
        return self


class Transaction(_Strict):
    service: str = Field(min_length=1, max_length=256)
    bt: str = Field(min_length=1, max_length=512)


class BusinessServiceSpec(_Strict):
    description: str | None = Field(default=None, max_length=1000)
    criticality: Literal["critical", "high", "medium", "low"]
    transactions: list[Transaction] = Field(min_length=1, max_length=1000)


class SLODocument(_Strict):
    apiVersion: Literal["tierscope/v1", "openslo/v1"]
    kind: Literal["SLO"]
    metadata: Metadata
    spec: SLOSpec


class BusinessServiceDocument(_Strict):
    apiVersion: Literal["tierscope/v1", "openslo/v1"]
    kind: Literal["BusinessService"]
    metadata: Metadata
    spec: BusinessServiceSpec


class CalendarSpec(_Strict):
    """The tenant's business week (see slo/calendar.py); overrides the TIERSCOPE_BUSINESS_* defaults."""

    timeZone: str = "UTC"
    country: str | None = None
    subdivision: str | None = None
    monthEndDays: int = Field(default=2, ge=0, le=10)
    blackoutDays: list[date] = Field(default_factory=list, max_length=1000)

    @field_validator("timeZone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _time_zone(value)

    @model_validator(mode="after")
    def _country(self) -> CalendarSpec:
        known = holidays.list_supported_countries()
        if self.country is not None and self.country not in known:
            raise ValueError(f"country: {self.country!r} is not a country code the holidays package knows")
        if self.subdivision is not None and (
            self.country is None or self.subdivision not in known[self.country]
        ):
            raise ValueError(f"subdivision: {self.subdivision!r} is not a subdivision of {self.country!r}")
        return self

    def calendar(self) -> BusinessCalendar:
        return BusinessCalendar(
            time_zone=self.timeZone,
            country=self.country,
            subdivision=self.subdivision,
            month_end_days=self.monthEndDays,
            blackout=frozenset(self.blackoutDays),
        )


class BusinessCalendarDocument(_Strict):
    apiVersion: Literal["tierscope/v1", "openslo/v1"]
    kind: Literal["BusinessCalendar"]
    metadata: Metadata
    spec: CalendarSpec = Field(default_factory=CalendarSpec)


MODELS: dict[str, type[SLODocument] | type[BusinessServiceDocument] | type[BusinessCalendarDocument]] = {
    "SLO": SLODocument,
    "BusinessService": BusinessServiceDocument,
    "BusinessCalendar": BusinessCalendarDocument,
}


@dataclass(frozen=True)
class Definitions:
    slos: tuple[SLODocument, ...] = ()
    services: tuple[BusinessServiceDocument, ...] = ()
    # Where each SLO's businessService is written, for the cross-file check of load().
    references: tuple[tuple[str, int], ...] = ()
    calendars: tuple[BusinessCalendarDocument, ...] = ()  # at most one in a checked set

    @property
    def calendar(self) -> BusinessCalendarDocument | None:
        return self.calendars[0] if self.calendars else None


def parse(text: str, source: str = "<slo>") -> Definitions:
    """Read one YAML file of SLO and BusinessService documents.

    Raises:
        DefinitionError: listing every problem, each with its file, line and field.
    """
    roots = compose(text, source)
    slos: list[tuple[Any, dict[tuple[Any, ...], int]]] = []
    services: list[tuple[Any, dict[tuple[Any, ...], int]]] = []
    calendars: list[tuple[Any, dict[tuple[Any, ...], int]]] = []
    problems: list[Problem] = []
    groups = {"SLO": slos, "BusinessService": services, "BusinessCalendar": calendars}
    for root in roots:
        if root is None:
            continue
        lines: dict[tuple[Any, ...], int] = {}
        value = plain(root, (), lines)
        kind = value.get("kind") if isinstance(value, dict) else None
        model = MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            where = ("kind",) if isinstance(value, dict) and "kind" in value else ()
            message = f"expected {', '.join(MODELS)}"
            problems.append(Problem(source, line_of(where, lines), "kind", message))
            continue
        try:
            document = model.model_validate(value)
        except ValidationError as exc:
            problems += problems_of(exc, lines, source)
            continue
        groups[str(kind)].append((document, lines))
    problems += _duplicates(source, slos, services)
    problems += _one_calendar([(source, lines.get(("kind",), 1)) for _, lines in calendars])
    if problems:
        raise DefinitionError(problems)
    references = tuple((source, lines.get(("spec", "businessService"), 1)) for _, lines in slos)
    return Definitions(
        tuple(d for d, _ in slos), tuple(d for d, _ in services), references, tuple(d for d, _ in calendars)
    )


def _one_calendar(places: list[tuple[str, int]]) -> list[Problem]:
    message = "a tenant has one BusinessCalendar; this is a second one"
    return [Problem(source, line, "kind", message) for source, line in places[1:]]


def _duplicates(source: str, *groups: list[tuple[Any, dict[tuple[Any, ...], int]]]) -> list[Problem]:
    problems = []
    for group in groups:
        seen: set[str] = set()
        for document, lines in group:
            if document.metadata.name in seen:
                message = f"{document.kind} {document.metadata.name!r} is defined twice"
                line = lines.get(("metadata", "name"), 1)
                problems.append(Problem(source, line, "metadata.name", message))
            seen.add(document.metadata.name)
    return problems


def load(path: Path, known_services: Iterable[str] = ()) -> Definitions:
    """Read a file, or every ``*.yaml``/``*.yml`` file of a directory (sorted), as one set.

    An SLO must name a business service defined in the set or in ``known_services``.
    """
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    if not files:  # nothing to apply is a mistake (and with --prune it would remove everything)
        raise DefinitionError(
            [Problem(str(path), 1, "document", "no *.yaml or *.yml file in this directory")]
        )
    slos: list[SLODocument] = []
    services: list[BusinessServiceDocument] = []
    references: list[tuple[str, int]] = []
    calendars: list[tuple[BusinessCalendarDocument, Path]] = []
    problems: list[Problem] = []
    for file in files:
        if file.stat().st_size > _MAX_FILE_BYTES:
            problems.append(Problem(str(file), 1, "document", "larger than 1 MiB; split it"))
            continue
        try:
            found = parse(file.read_text(encoding="utf-8"), str(file))
        except DefinitionError as exc:
            problems += exc.problems
            continue
        except UnicodeDecodeError:
            problems.append(Problem(str(file), 1, "document", "is not UTF-8 text"))
            continue
        slos += found.slos
        services += found.services
        references += found.references
        calendars += [(c, file) for c in found.calendars]
    problems += _duplicates(str(path), [(s, {}) for s in slos], [(s, {}) for s in services])
    problems += _one_calendar([(str(file), 1) for _, file in calendars])
    names = {s.metadata.name for s in services} | set(known_services)
    for slo, (source, line) in zip(slos, references, strict=True):
        wanted = slo.spec.businessService
        if wanted is not None and wanted not in names:
            message = f"no business service named {wanted!r} in these files or already applied"
            problems.append(Problem(source, line, "spec.businessService", message))
    if problems:
        raise DefinitionError(problems)
    return Definitions(tuple(slos), tuple(services), calendars=tuple(c for c, _ in calendars))


def threshold_us(spec: SLOSpec) -> float | None:
    return None if spec.threshold is None else parse_duration(spec.threshold).total_seconds() * 1e6
