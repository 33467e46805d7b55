"""Dashboard forms for bots: the bot author/edit form built from schemas, backtests, paper sessions.

Forms only read input into the shapes services take; the rules (ranges, fast < slow, the gate)
stay in the services, whose AppError details are put back next to the fields they name.
"""
from __future__ import annotations

import re

from django import forms

from bots.services import MAX_SEED, MAX_STARTING_CASH
from paper.engine.bars import TIMEFRAME_SECONDS
from paper.engine.botconfig import STRATEGY_MAX_LENGTH, STRATEGY_RE
from paper.engine.broker import ExecutionConfig
from paper.engine.strategy import StrategyConfigError, get_strategy_class, registered_strategies
from risk.limits import RiskBlock

DEFAULT_STRATEGY = "sma_crossover"
# "params.slow: fast must be smaller than slow" -> ("params.slow", "fast must be smaller than slow")
FIELD_MESSAGE = re.compile(r"^(?P<field>[A-Za-z_][\w.\[\]]*): (?P<message>.+)$", re.S)


def _nullable_branch(prop: dict) -> tuple[dict, bool]:
    """A JSON-schema property with its `anyOf: [X, null]` unwrapped: (X, may be null)."""
    if "anyOf" not in prop:
        return prop, False
    branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
    merged = {**prop, **(branches[0] if branches else {})}
    merged.pop("anyOf", None)
    return merged, len(branches) < len(prop["anyOf"])


def schema_field(name: str, prop: dict, *, required: bool) -> forms.Field:
    """One form field from one JSON-schema property (pydantic's model_json_schema()).

    Blank means "not set": the model's default applies. Bounds become HTML hints only; the
    model itself (through the service) decides what is valid and says why.
    """
    prop, _ = _nullable_branch(prop)
    kind = prop.get("type")
    label = prop.get("title") or name.replace("_", " ")
    help_parts = [prop.get("description", "")]
    if prop.get("default") is not None and kind != "boolean":
        help_parts.append(f"default {prop['default']}")
    help_text = "; ".join(p for p in help_parts if p)
    attrs = {}
    for key, attr in (("minimum", "min"), ("maximum", "max")):
        if key in prop:
            attrs[attr] = prop[key]
    common = {"label": label, "help_text": help_text, "required": required}
    if "enum" in prop:
        choices = [("", "—")] * (not required) + [(v, v) for v in prop["enum"]]
        return forms.ChoiceField(choices=choices, **common)
    if kind == "integer":
        return forms.IntegerField(widget=forms.NumberInput(attrs={**attrs, "step": 1}), **common)
    if kind == "number":
        return forms.FloatField(widget=forms.NumberInput(attrs={**attrs, "step": "any"}), **common)
    if kind == "boolean":
        return forms.BooleanField(label=label, help_text=help_text, required=False)
    return forms.CharField(**common)


def strategy_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in registered_strategies()]


def _loadable(strategy, allowed: str | None) -> bool:
    """Worth a lookup: a registered strategy, or `allowed` (the edited bot's own dotted path).

    What a form posts (or the params fragment is asked for) is not trusted: looking a dotted
    path up imports its module, with whatever that import does, and a path of thousands of
    dots made importlib recurse until the interpreter gave up.
    """
    if not isinstance(strategy, str) or len(strategy) > STRATEGY_MAX_LENGTH or not STRATEGY_RE.match(strategy):
        return False
    return strategy in registered_strategies() or strategy == allowed


def strategy_description(strategy: str, *, allowed: str | None = None) -> str:
    if not _loadable(strategy, allowed):
        return ""
    try:
        return get_strategy_class(strategy).description
    except StrategyConfigError:
        return ""


def params_schema(strategy: str, *, allowed: str | None = None) -> dict:
    """The strategy's Params schema, or an empty one when the strategy cannot be loaded."""
    if not _loadable(strategy, allowed):
        return {"properties": {}}
    try:
        return get_strategy_class(strategy).Params.model_json_schema()
    except StrategyConfigError:
        return {"properties": {}}


def risk_schema() -> dict:
    """RiskBlock's fields, in RiskBlock.model_fields order (every limit optional)."""
    props = RiskBlock.model_json_schema()["properties"]
    return {"properties": {name: props[name] for name in RiskBlock.model_fields}}


def execution_schema() -> dict:
    return ExecutionConfig.model_json_schema()


class BotForm(forms.Form):
    """Name, strategy, the strategy's params (from its schema), symbols, timeframe, risk, execution.

    Field names of the schema blocks are their service paths (`params.fast`, `risk.max_leverage`),
    so a service error for `params.slow` lands next to the `params.slow` input.
    """

    GROUPS = ("params", "risk", "execution")

    name = forms.CharField(max_length=100)
    strategy = forms.ChoiceField(choices=(), help_text="a registered strategy")
    symbols = forms.CharField(help_text="comma-separated, e.g. ETH-USD, BTC-USD; the first is the default")
    timeframe = forms.ChoiceField(choices=[(t, t) for t in TIMEFRAME_SECONDS], initial="1d")

    def __init__(self, data=None, *, bot=None, strategy: str | None = None):
        self.bot = bot
        self.selected_strategy = (
            strategy or (data or {}).get("strategy") or (bot.strategy if bot else DEFAULT_STRATEGY)
        )
        initial = {}
        if bot is not None:
            initial = {"name": bot.name, "strategy": bot.strategy, "symbols": ", ".join(bot.symbols),
                       "timeframe": bot.timeframe}
        initial["strategy"] = self.selected_strategy
        super().__init__(data, initial=initial)
        choices = strategy_choices()
        if self.selected_strategy not in dict(choices) and bot is not None and self.selected_strategy == bot.strategy:
            choices.append((bot.strategy, f"{bot.strategy} (custom)"))  # a dotted-path strategy stays editable
        self.fields["strategy"].choices = choices
        # Values to start from: the bot's own, as long as the strategy is the bot's.
        same_strategy = bot is not None and bot.strategy == self.selected_strategy
        values = {
            "params": bot.params if same_strategy else {},
            "risk": bot.risk if bot is not None else {},
            "execution": bot.execution if bot is not None else {},
        }
        schemas = {"params": params_schema(self.selected_strategy, allowed=self._own_strategy), "risk": risk_schema(),
                   "execution": execution_schema()}
        for group, schema in schemas.items():
            required = set(schema.get("required", ()))
            for key, prop in schema.get("properties", {}).items():
                name = f"{group}.{key}"
                self.fields[name] = schema_field(key, prop, required=key in required)
                value = values[group].get(key, _nullable_branch(prop)[0].get("default"))
                if value is not None:
                    self.fields[name].initial = value

    def group(self, group: str) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(f"{group}.")]

    @property
    def params_fields(self) -> list[forms.BoundField]:
        return self.group("params")

    @property
    def risk_fields(self) -> list[forms.BoundField]:
        return self.group("risk")

    @property
    def execution_fields(self) -> list[forms.BoundField]:
        return self.group("execution")

    @property
    def strategy_description(self) -> str:
        return strategy_description(self.selected_strategy, allowed=self._own_strategy)

    @property
    def _own_strategy(self) -> str | None:
        return self.bot.strategy if self.bot is not None else None

    def group_errors(self, group: str) -> list[str]:
        return self.errors.get(group, [])

    def clean_symbols(self) -> list[str]:
        return [s.strip() for s in re.split(r"[,\s]+", self.cleaned_data["symbols"]) if s.strip()]

    def service_kwargs(self) -> dict:
        """The cleaned form as bot_create / bot_update keywords; blank block fields are left out."""
        data = self.cleaned_data
        blocks: dict[str, dict] = {group: {} for group in self.GROUPS}
        for name, value in data.items():
            group, _, key = name.partition(".")
            if group in blocks and value is not None and value != "":
                blocks[group][key] = value
        return {"name": data["name"], "strategy": data["strategy"], "symbols": data["symbols"],
                "timeframe": data["timeframe"], **blocks}

    def add_service_errors(self, details: list[dict] | dict | None, message: str = "") -> None:
        """Put a service's `[{field, message}]` next to the inputs they name."""
        add_service_errors(self, details, message)


def add_service_errors(form: forms.Form, details: list[dict] | dict | None, message: str = "") -> None:
    """Map AppError details onto a form: the most precise field the message names, else the
    top-level field, else the form as a whole.

    Bot services report `{"field": "params", "message": "params.slow: fast must be smaller than slow"}`.
    """
    if not isinstance(details, list) or not details:
        form.add_error(None, message or "the request was refused")
        return
    for detail in details:
        field, text = str(detail.get("field") or ""), str(detail.get("message") or message)
        match = FIELD_MESSAGE.match(text)
        if match and match["field"].split(".")[0] == field.split(".")[0]:
            field, text = match["field"], match["message"]
        for candidate in (field, field.split(".")[0]):
            if candidate in form.fields:
                form.add_error(candidate, text)
                break
        else:
            form.add_error(None, f"{field}: {text}" if field else text)


class BacktestForm(forms.Form):
    DATA_SOURCES = [("stored", "stored bars (market data)"), ("synthetic", "synthetic (seeded generator)")]

    data_source = forms.ChoiceField(choices=DATA_SOURCES, initial="stored")
    symbol = forms.ChoiceField(choices=(), required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="blank: from the first stored bar")
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                          help_text="blank: to the last stored bar")
    starting_cash = forms.FloatField(initial=100_000, min_value=0.01, max_value=MAX_STARTING_CASH)
    seed = forms.IntegerField(initial=0, min_value=0, max_value=MAX_SEED)

    def __init__(self, data=None, *, bot):
        super().__init__(data)
        self.fields["symbol"].choices = [(s, s) for s in bot.symbols]
        self.fields["symbol"].initial = bot.symbols[0] if bot.symbols else None

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            self.add_error("end", "end must be on or after start")
        return data


class PaperSessionForm(forms.Form):
    """Starting cash, duration and pace of a live paper session (paper.sessions.SessionRequest)."""

    DATA_SOURCES = [("synthetic", "synthetic bars (seeded generator)"), ("stored", "stored bars (replayed)")]

    starting_cash = forms.FloatField(initial=100_000)
    duration_minutes = forms.FloatField(initial=60, help_text="one bar per minute of session time")
    pace = forms.FloatField(initial=1, help_text="60 runs a 60-minute session in one minute")
    symbol = forms.ChoiceField(choices=(), required=False)
    data_source = forms.ChoiceField(choices=DATA_SOURCES, initial="synthetic")

    def __init__(self, data=None, *, bot):
        super().__init__(data)
        self.fields["symbol"].choices = [(s, s) for s in bot.symbols]
        self.fields["symbol"].initial = bot.symbols[0] if bot.symbols else None
