"""Discord's limits on message bodies and application-command schemas.

Each check yields ``FieldError``s with Discord's error codes, so the fake can answer with the same
50035 ``Invalid Form Body`` tree Discord sends (discord.py turns it into a readable message).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import FieldError
from .models import MESSAGE_FLAG_COMPONENTS_V2, iter_components

Path = tuple[str | int, ...]

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_ATTACHMENTS = 10
MAX_EMBED_TOTAL = 6000
EMBED_LIMITS = {"title": 256, "description": 4096}
MAX_FIELDS = 25
MAX_ROWS = 5
MAX_ROW_BUTTONS = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
SELECT_TYPES = {3, 5, 6, 7, 8}


def _too_long(path: Path, limit: int) -> FieldError:
    return FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _required(path: Path) -> FieldError:
    return FieldError(path, "BASE_TYPE_REQUIRED", "This field is required")


def check_message(payload: dict[str, Any], prefix: Path = ()) -> list[FieldError]:
    """Content, embeds, components, attachments and allowed_mentions limits."""
    errors: list[FieldError] = []
    content = payload.get("content")
    if content is not None:
        if not isinstance(content, str):
            errors.append(FieldError((*prefix, "content"), "BASE_TYPE_STRING", "Not a string."))
        elif len(content) > MAX_CONTENT:
            errors.append(_too_long((*prefix, "content"), MAX_CONTENT))
    embeds = payload.get("embeds")
    if embeds is not None:
        errors.extend(_check_embeds(embeds, (*prefix, "embeds")))
    attachments = payload.get("attachments")
    if attachments is not None and len(attachments) > MAX_ATTACHMENTS:
        errors.append(_too_long((*prefix, "attachments"), MAX_ATTACHMENTS))
    components = payload.get("components")
    if components is not None:
        v2 = bool(int(payload.get("flags") or 0) & MESSAGE_FLAG_COMPONENTS_V2)
        errors.extend(check_components(components, (*prefix, "components"), v2=v2))
    mentions = payload.get("allowed_mentions")
    if mentions is not None:
        errors.extend(_check_allowed_mentions(mentions, (*prefix, "allowed_mentions")))
    return errors


def _check_embeds(embeds: Any, path: Path) -> Iterator[FieldError]:
    if not isinstance(embeds, list):
        yield FieldError(path, "BASE_TYPE_ARRAY", "Not an array.")
        return
    if len(embeds) > MAX_EMBEDS:
        yield _too_long(path, MAX_EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        epath = (*path, i)
        for key, limit in EMBED_LIMITS.items():
            value = embed.get(key)
            if value is not None:
                total += len(value)
                if len(value) > limit:
                    yield _too_long((*epath, key), limit)
        fields = embed.get("fields") or []
        if len(fields) > MAX_FIELDS:
            yield _too_long((*epath, "fields"), MAX_FIELDS)
        for j, fld in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                value = fld.get(key)
                if not value:
                    yield _required((*epath, "fields", j, key))
                    continue
                total += len(value)
                if len(value) > limit:
                    yield _too_long((*epath, "fields", j, key), limit)
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            obj = embed.get(key)
            if obj:
                value = obj.get(sub)
                if not value:
                    yield _required((*epath, key, sub))
                    continue
                total += len(value)
                if len(value) > limit:
                    yield _too_long((*epath, key, sub), limit)
    if total > MAX_EMBED_TOTAL:
        yield FieldError(
            path, "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"
        )


def check_components(components: Any, path: Path, *, v2: bool = False) -> list[FieldError]:
    """Classic limits (5 rows x 5 buttons, one select per row), custom_id and label limits."""
    errors: list[FieldError] = []
    if not isinstance(components, list):
        return [FieldError(path, "BASE_TYPE_ARRAY", "Not an array.")]
    if not v2:
        if len(components) > MAX_ROWS:
            errors.append(_too_long(path, MAX_ROWS))
        for i, row in enumerate(components):
            rpath = (*path, i)
            if row.get("type") != 1:
                errors.append(
                    FieldError((*rpath, "type"), "UNION_TYPE_CHOICES", "Value must be one of {1}.")
                )
                continue
            children = row.get("components") or []
            if not children:
                errors.append(FieldError((*rpath, "components"), "BASE_TYPE_MIN_LENGTH",
                                         "Must be 1 or more in length."))
            selects = [c for c in children if c.get("type") in SELECT_TYPES]
            if selects and len(children) > 1:
                errors.append(FieldError((*rpath, "components"), "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                                         "The specified component exceeds the maximum width"))
            elif len(children) > MAX_ROW_BUTTONS:
                errors.append(_too_long((*rpath, "components"), MAX_ROW_BUTTONS))
            for j, comp in enumerate(children):
                errors.extend(_check_interactive(comp, (*rpath, "components", j)))
    else:
        for comp in iter_components(components):
            if comp.get("type") in {2, *SELECT_TYPES}:
                errors.extend(_check_interactive(comp, path))
    seen: set[str] = set()
    for comp in iter_components(components):
        cid = comp.get("custom_id")
        if cid is None:
            continue
        if cid in seen:
            errors.append(FieldError(path, "COMPONENT_CUSTOM_ID_DUPLICATED",
                                     f"Component custom id cannot be duplicated: {cid!r}"))
        seen.add(cid)
    return errors


def _check_interactive(comp: dict[str, Any], path: Path) -> Iterator[FieldError]:
    ctype = comp.get("type")
    if ctype == 2:
        style = comp.get("style")
        if style not in (1, 2, 3, 4, 5, 6):
            yield FieldError((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of (1..6).")
        label = comp.get("label")
        if label is not None and len(label) > MAX_LABEL:
            yield _too_long((*path, "label"), MAX_LABEL)
        if not label and not comp.get("emoji") and style != 6:
            yield FieldError(path, "BUTTON_COMPONENT_MISSING_LABEL_OR_EMOJI",
                             "A button must have a label or an emoji")
        if style == 5:
            if not comp.get("url"):
                yield FieldError((*path, "url"), "BUTTON_COMPONENT_URL_REQUIRED",
                                 "A url is required")
            if comp.get("custom_id") is not None:
                yield FieldError((*path, "custom_id"), "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                                 "A custom id cannot be specified")
            return
        if style == 6:
            return
    elif ctype in SELECT_TYPES:
        options = comp.get("options")
        if ctype == 3:
            if not options:
                yield FieldError((*path, "options"), "BASE_TYPE_MIN_LENGTH",
                                 "Must be 1 or more in length.")
            elif len(options) > 25:
                yield _too_long((*path, "options"), 25)
            for k, opt in enumerate(options or []):
                for key in ("label", "value", "description"):
                    value = opt.get(key)
                    if value is not None and len(value) > 100:
                        yield _too_long((*path, "options", k, key), 100)
        placeholder = comp.get("placeholder")
        if placeholder is not None and len(placeholder) > 150:
            yield _too_long((*path, "placeholder"), 150)
    elif ctype == 4:
        yield FieldError((*path, "type"), "COMPONENT_TYPE_INVALID",
                         "Text inputs are only allowed in modals")
        return
    else:
        return
    yield from _check_custom_id(comp, path)


def _check_custom_id(comp: dict[str, Any], path: Path) -> Iterator[FieldError]:
    """An interactive component's custom_id: 1..100 characters."""
    cid = comp.get("custom_id")
    if not cid:
        yield _required((*path, "custom_id"))
    elif len(cid) > MAX_CUSTOM_ID:
        yield _too_long((*path, "custom_id"), MAX_CUSTOM_ID)


def check_modal(data: dict[str, Any], path: Path) -> list[FieldError]:
    """Modal (callback type 9): title <= 45, custom_id <= 100, 1..5 components; each label and
    text input within Discord's bounds (`_check_label`, `_check_text_input`)."""
    errors: list[FieldError] = []
    title = data.get("title")
    if not title:
        errors.append(_required((*path, "title")))
    elif len(title) > 45:
        errors.append(_too_long((*path, "title"), 45))
    cid = data.get("custom_id")
    if not cid:
        errors.append(_required((*path, "custom_id")))
    elif len(cid) > MAX_CUSTOM_ID:
        errors.append(_too_long((*path, "custom_id"), MAX_CUSTOM_ID))
    comps = data.get("components") or []
    if not 1 <= len(comps) <= 5:
        errors.append(FieldError((*path, "components"), "BASE_TYPE_BAD_LENGTH",
                                 "Must be between 1 and 5 in length."))
    for k, comp in enumerate(comps):
        where = (*path, "components", k)
        if comp.get("type") == 18:  # a label around one input
            errors.extend(_check_label(comp, where))
            errors.extend(_check_text_input(comp.get("component") or {}, (*where, "component"),
                                            labelled=True))
        elif comp.get("type") == 1:  # legacy: an action row holding one text input
            for j, inner in enumerate(comp.get("components") or []):
                errors.extend(_check_text_input(inner, (*where, "components", j),
                                                labelled=False))
    return errors


#: Text input bounds (Discord: value, min_length and max_length within 0..4000).
MAX_TEXT_INPUT = 4000


def _check_label(comp: dict[str, Any], path: Path) -> Iterator[FieldError]:
    """Label (type 18): label 1..45, description <= 100."""
    label = comp.get("label")
    if not label:
        yield _required((*path, "label"))
    elif len(label) > 45:
        yield _too_long((*path, "label"), 45)
    description = comp.get("description")
    if description is not None and len(description) > 100:
        yield _too_long((*path, "description"), 100)


def _check_text_input(comp: dict[str, Any], path: Path, *, labelled: bool) -> Iterator[FieldError]:
    """Text input (type 4) in a modal: custom_id 1..100, style 1 or 2, label 1..45 when not in
    a Label, min_length 0..4000, max_length 1..4000 (min <= max), placeholder <= 100, and a
    pre-filled value of at most max_length (4000) characters."""
    if comp.get("type") != 4:
        return
    yield from _check_custom_id(comp, path)
    if comp.get("style") not in (1, 2):
        yield FieldError((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
    label = comp.get("label")
    if label is None and not labelled:
        yield _required((*path, "label"))
    elif label is not None and len(label) > 45:
        yield _too_long((*path, "label"), 45)
    low, high = comp.get("min_length"), comp.get("max_length")
    if low is not None and not 0 <= low <= MAX_TEXT_INPUT:
        yield FieldError((*path, "min_length"), "NUMBER_TYPE_MAX",
                         f"int value should be between 0 and {MAX_TEXT_INPUT}.")
    if high is not None and not 1 <= high <= MAX_TEXT_INPUT:
        yield FieldError((*path, "max_length"), "NUMBER_TYPE_MAX",
                         f"int value should be between 1 and {MAX_TEXT_INPUT}.")
    if low is not None and high is not None and low > high:
        yield FieldError((*path, "min_length"), "BASE_TYPE_BAD_LENGTH",
                         "min_length must be less than or equal to max_length.")
    placeholder = comp.get("placeholder")
    if placeholder is not None and len(placeholder) > 100:
        yield _too_long((*path, "placeholder"), 100)
    value = comp.get("value")
    if value is not None and len(value) > min(high or MAX_TEXT_INPUT, MAX_TEXT_INPUT):
        yield _too_long((*path, "value"), min(high or MAX_TEXT_INPUT, MAX_TEXT_INPUT))


def _check_allowed_mentions(mentions: Any, path: Path) -> Iterator[FieldError]:
    if not isinstance(mentions, dict):
        yield FieldError(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return
    parse = mentions.get("parse") or []
    for i, item in enumerate(parse):
        if item not in ("users", "roles", "everyone"):
            yield FieldError((*path, "parse", i), "BASE_TYPE_CHOICES",
                             "Value must be one of ('roles', 'users', 'everyone').")
    for key in ("users", "roles"):
        ids = mentions.get(key) or []
        if ids and key in parse:
            yield FieldError((*path, "parse"), "SET_TYPE_ALREADY_CONTAINS_VALUE",
                             f'parse:["{key}"] and {key}: [ids...] are mutually exclusive.')
        if len(ids) > 100:
            yield _too_long((*path, key), 100)


USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")


def mentioned(
    content: str, allowed: dict[str, Any] | None
) -> tuple[list[int], list[int], bool, bool]:
    """Which user ids, role ids and @everyone/@here the content pings under ``allowed``.

    Returns ``(user_ids, role_ids, everyone, replied_user)``; existence is checked by the caller.
    With no ``allowed_mentions`` Discord parses everything.
    """
    users = [int(x) for x in USER_MENTION.findall(content)]
    roles = [int(x) for x in ROLE_MENTION.findall(content)]
    everyone = "@everyone" in content or "@here" in content
    if allowed is None:
        return _dedupe(users), _dedupe(roles), everyone, True
    parse = set(allowed.get("parse") or [])
    allowed_users = {int(x) for x in allowed.get("users") or []}
    allowed_roles = {int(x) for x in allowed.get("roles") or []}
    user_ids = users if "users" in parse else [u for u in users if u in allowed_users]
    role_ids = roles if "roles" in parse else [r for r in roles if r in allowed_roles]
    replied = bool(allowed.get("replied_user", False))
    return _dedupe(user_ids), _dedupe(role_ids), everyone and "everyone" in parse, replied


def _dedupe(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(ids))


# ---------------------------------------------------------------- application command schema

NAME_RE = re.compile(r"^[-_'\w]{1,32}$")
OPTION_TYPES = set(range(1, 12))


def check_commands(commands: Any, path: Path = ()) -> list[FieldError]:
    """What Discord checks on a bulk overwrite (PUT .../commands)."""
    if not isinstance(commands, list):
        return [FieldError(path, "BASE_TYPE_ARRAY", "Not an array.")]
    errors: list[FieldError] = []
    names: set[tuple[int, str]] = set()
    chat_input = 0
    for i, cmd in enumerate(commands):
        errors.extend(check_command(cmd, (*path, i)))
        ctype = int(cmd.get("type", 1))
        chat_input += ctype == 1
        key = (ctype, cmd.get("name", ""))
        if key in names:
            errors.append(FieldError((*path, i, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                     f"Application command names must be unique: {key[1]}"))
        names.add(key)
    if chat_input > 100:
        errors.append(FieldError(path, "BASE_TYPE_MAX_LENGTH",
                                 "Maximum number of application commands reached (100)"))
    return errors


def check_command(cmd: dict[str, Any], path: Path) -> list[FieldError]:
    errors: list[FieldError] = []
    ctype = int(cmd.get("type", 1))
    name = cmd.get("name")
    if ctype == 1:
        errors.extend(_check_name(name, (*path, "name")))
        errors.extend(_check_description(cmd.get("description"), (*path, "description")))
        errors.extend(_check_options(cmd.get("options") or [], (*path, "options"), depth=0))
        if _schema_length(cmd) > 4000:
            errors.append(FieldError(path, "APPLICATION_COMMAND_TOO_LARGE",
                                     "Command exceeds maximum size (4000)"))
    else:
        if not name or len(name) > 32:
            errors.append(FieldError((*path, "name"), "BASE_TYPE_BAD_LENGTH",
                                     "Must be between 1 and 32 in length."))
        if cmd.get("description"):
            errors.append(FieldError((*path, "description"), "APPLICATION_COMMAND_INVALID",
                                     "Context menu commands cannot have a description"))
    return errors


def _check_name(name: Any, path: Path) -> Iterator[FieldError]:
    if not isinstance(name, str) or not NAME_RE.match(name) or name != name.lower():
        yield FieldError(path, "APPLICATION_COMMAND_INVALID_NAME",
                         f"Command name is invalid: {name!r}")


def _check_description(desc: Any, path: Path) -> Iterator[FieldError]:
    if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
        yield FieldError(path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")


def _check_options(options: list[dict[str, Any]], path: Path, depth: int) -> Iterator[FieldError]:
    if len(options) > 25:
        yield _too_long(path, 25)
    kinds = {int(o.get("type", 0)) for o in options}
    if kinds & {1, 2} and kinds - {1, 2}:
        yield FieldError(path, "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                         "Sub-commands and sub-command groups cannot be mixed with other options")
    seen_optional = False
    names: set[str] = set()
    for i, opt in enumerate(options):
        opath = (*path, i)
        otype = int(opt.get("type", 0))
        name = opt.get("name")
        if otype not in OPTION_TYPES:
            yield FieldError((*opath, "type"), "BASE_TYPE_CHOICES", "Value must be one of 1..11.")
            continue
        yield from _check_name(name, (*opath, "name"))
        yield from _check_description(opt.get("description"), (*opath, "description"))
        if name in names:
            yield FieldError((*opath, "name"), "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                             f"Option name {name!r} is already used")
        names.add(name)
        if otype == 2:
            if depth != 0:
                yield FieldError((*opath, "type"), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                                 "Sub-command groups can only be at the top level")
            children = opt.get("options") or []
            if any(int(c.get("type", 0)) != 1 for c in children):
                yield FieldError((*opath, "options"), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                                 "Sub-command groups may only contain sub-commands")
            yield from _check_options(children, (*opath, "options"), depth + 1)
            continue
        if otype == 1:
            if depth > 1:
                yield FieldError((*opath, "type"), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                                 "Sub-commands nest at most inside one group")
            children = opt.get("options") or []
            if any(int(c.get("type", 0)) in (1, 2) for c in children):
                yield FieldError((*opath, "options"), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                                 "Sub-commands cannot contain sub-commands")
            yield from _check_options(children, (*opath, "options"), depth + 1)
            continue
        required = bool(opt.get("required", False))
        if required and seen_optional:
            yield FieldError((*opath, "required"), "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                             "Required options must be placed before non-required options")
        seen_optional |= not required
        choices = opt.get("choices")
        if choices is not None:
            if otype not in (3, 4, 10):
                yield FieldError((*opath, "choices"), "APPLICATION_COMMAND_OPTION_CHOICES_INVALID",
                                 "Only string, integer and number options can have choices")
            if len(choices) > 25:
                yield _too_long((*opath, "choices"), 25)
            if opt.get("autocomplete"):
                yield FieldError((*opath, "autocomplete"), "AUTOCOMPLETE_AND_CHOICES",
                                 "Autocomplete and choices are mutually exclusive")
            for k, choice in enumerate(choices):
                cname = choice.get("name")
                if not isinstance(cname, str) or not 1 <= len(cname) <= 100:
                    yield FieldError((*opath, "choices", k, "name"), "BASE_TYPE_BAD_LENGTH",
                                     "Must be between 1 and 100 in length.")
                value = choice.get("value")
                if otype == 3 and (not isinstance(value, str) or len(value) > 100):
                    yield FieldError((*opath, "choices", k, "value"), "BASE_TYPE_BAD_LENGTH",
                                     "Must be between 1 and 100 in length.")
                if otype == 4 and (not isinstance(value, int) or isinstance(value, bool)):
                    yield FieldError((*opath, "choices", k, "value"), "NUMBER_TYPE_COERCE",
                                     "Value is not int.")
        for key in ("min_length", "max_length"):
            if key in opt and not 0 <= int(opt[key]) <= 6000:
                yield FieldError((*opath, key), "NUMBER_TYPE_MAX",
                                 "int value should be between 0 and 6000.")
        lo, hi = opt.get("min_value"), opt.get("max_value")
        if lo is not None and hi is not None and lo > hi:
            yield FieldError((*opath, "min_value"), "APPLICATION_COMMAND_OPTION_RANGE_INVALID",
                             "min_value must be less than or equal to max_value")


def _schema_length(cmd: dict[str, Any]) -> int:
    total = len(cmd.get("name", "")) + len(cmd.get("description", ""))

    def walk(options: list[dict[str, Any]]) -> int:
        size = 0
        for opt in options:
            size += len(opt.get("name", "")) + len(opt.get("description", ""))
            for choice in opt.get("choices") or []:
                size += len(str(choice.get("name", ""))) + len(str(choice.get("value", "")))
            size += walk(opt.get("options") or [])
        return size

    return total + walk(cmd.get("options") or [])
