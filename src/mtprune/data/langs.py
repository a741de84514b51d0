"""Language codes -> English language names, for prompts and for matching data files.

Accepts ISO 639-1 (``de``), ISO 639-3 (``deu``), ISO 639-2/B (``ger``) codes, locale-style
tags (``de_DE``, ``pt-br``, ``ar_EG``, ``zh-Hans``, FLORES-style ``deu_Latn``) and English
names (``German``), case-insensitively, and returns one normalized :class:`Language`.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from ..errors import DataError

# (ISO 639-1 or "", ISO 639-3, English name, other accepted codes: ISO 639-2/B, legacy, individual codes)
_TABLE: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("ab", "abk", "Abkhazian", ()),
    ("af", "afr", "Afrikaans", ()),
    ("ak", "aka", "Akan", ("twi",)),
    ("am", "amh", "Amharic", ()),
    ("an", "arg", "Aragonese", ()),
    ("ar", "ara", "Arabic", ("arb",)),
    ("as", "asm", "Assamese", ()),
    ("ay", "aym", "Aymara", ()),
    ("az", "aze", "Azerbaijani", ("azj",)),
    ("ba", "bak", "Bashkir", ()),
    ("be", "bel", "Belarusian", ()),
    ("bg", "bul", "Bulgarian", ()),
    ("bm", "bam", "Bambara", ()),
    ("bn", "ben", "Bengali", ()),
    ("bo", "bod", "Tibetan", ("tib",)),
    ("br", "bre", "Breton", ()),
    ("bs", "bos", "Bosnian", ()),
    ("ca", "cat", "Catalan", ()),
    ("ce", "che", "Chechen", ()),
    ("co", "cos", "Corsican", ()),
    ("cs", "ces", "Czech", ("cze",)),
    ("cv", "chv", "Chuvash", ()),
    ("cy", "cym", "Welsh", ("wel",)),
    ("da", "dan", "Danish", ()),
    ("de", "deu", "German", ("ger",)),
    ("dv", "div", "Dhivehi", ()),
    ("dz", "dzo", "Dzongkha", ()),
    ("ee", "ewe", "Ewe", ()),
    ("el", "ell", "Greek", ("gre",)),
    ("en", "eng", "English", ()),
    ("eo", "epo", "Esperanto", ()),
    ("es", "spa", "Spanish", ()),
    ("et", "est", "Estonian", ("ekk",)),
    ("eu", "eus", "Basque", ("baq",)),
    ("fa", "fas", "Persian", ("per", "pes")),
    ("ff", "ful", "Fula", ()),
    ("fi", "fin", "Finnish", ()),
    ("fj", "fij", "Fijian", ()),
    ("fo", "fao", "Faroese", ()),
    ("fr", "fra", "French", ("fre",)),
    ("fy", "fry", "Western Frisian", ()),
    ("ga", "gle", "Irish", ()),
    ("gd", "gla", "Scottish Gaelic", ()),
    ("gl", "glg", "Galician", ()),
    ("gn", "grn", "Guarani", ("gug",)),
    ("gu", "guj", "Gujarati", ()),
    ("gv", "glv", "Manx", ()),
    ("ha", "hau", "Hausa", ()),
    ("he", "heb", "Hebrew", ("iw",)),
    ("hi", "hin", "Hindi", ()),
    ("hr", "hrv", "Croatian", ()),
    ("ht", "hat", "Haitian Creole", ()),
    ("hu", "hun", "Hungarian", ()),
    ("hy", "hye", "Armenian", ("arm",)),
    ("ia", "ina", "Interlingua", ()),
    ("id", "ind", "Indonesian", ("in",)),
    ("ig", "ibo", "Igbo", ()),
    ("ii", "iii", "Sichuan Yi", ()),
    ("io", "ido", "Ido", ()),
    ("is", "isl", "Icelandic", ("ice",)),
    ("it", "ita", "Italian", ()),
    ("iu", "iku", "Inuktitut", ()),
    ("ja", "jpn", "Japanese", ()),
    ("jv", "jav", "Javanese", ("jw",)),
    ("ka", "kat", "Georgian", ("geo",)),
    ("kg", "kon", "Kongo", ()),
    ("ki", "kik", "Kikuyu", ()),
    ("kk", "kaz", "Kazakh", ()),
    ("kl", "kal", "Greenlandic", ()),
    ("km", "khm", "Khmer", ()),
    ("kn", "kan", "Kannada", ()),
    ("ko", "kor", "Korean", ()),
    ("kr", "kau", "Kanuri", ()),
    ("ks", "kas", "Kashmiri", ()),
    ("ku", "kur", "Kurdish", ()),
    ("kw", "cor", "Cornish", ()),
    ("ky", "kir", "Kyrgyz", ()),
    ("la", "lat", "Latin", ()),
    ("lb", "ltz", "Luxembourgish", ()),
    ("lg", "lug", "Ganda", ()),
    ("li", "lim", "Limburgish", ()),
    ("ln", "lin", "Lingala", ()),
    ("lo", "lao", "Lao", ()),
    ("lt", "lit", "Lithuanian", ()),
    ("lv", "lav", "Latvian", ("lvs",)),
    ("mg", "mlg", "Malagasy", ("plt",)),
    ("mi", "mri", "Maori", ("mao",)),
    ("mk", "mkd", "Macedonian", ("mac",)),
    ("ml", "mal", "Malayalam", ()),
    ("mn", "mon", "Mongolian", ("khk",)),
    ("mr", "mar", "Marathi", ()),
    ("ms", "msa", "Malay", ("may", "zsm")),
    ("mt", "mlt", "Maltese", ()),
    ("my", "mya", "Burmese", ("bur",)),
    ("nb", "nob", "Norwegian Bokmål", ()),
    ("nd", "nde", "North Ndebele", ()),
    ("ne", "nep", "Nepali", ("npi",)),
    ("nl", "nld", "Dutch", ("dut",)),
    ("nn", "nno", "Norwegian Nynorsk", ()),
    ("no", "nor", "Norwegian", ()),
    ("nr", "nbl", "South Ndebele", ()),
    ("nv", "nav", "Navajo", ()),
    ("ny", "nya", "Chichewa", ()),
    ("oc", "oci", "Occitan", ()),
    ("om", "orm", "Oromo", ("gaz",)),
    ("or", "ori", "Odia", ("ory",)),
    ("os", "oss", "Ossetian", ()),
    ("pa", "pan", "Punjabi", ()),
    ("pl", "pol", "Polish", ()),
    ("ps", "pus", "Pashto", ("pbt",)),
    ("pt", "por", "Portuguese", ()),
    ("qu", "que", "Quechua", ("quy",)),
    ("rm", "roh", "Romansh", ()),
    ("rn", "run", "Kirundi", ()),
    ("ro", "ron", "Romanian", ("rum", "mo")),
    ("ru", "rus", "Russian", ()),
    ("rw", "kin", "Kinyarwanda", ()),
    ("sa", "san", "Sanskrit", ()),
    ("sc", "srd", "Sardinian", ()),
    ("sd", "snd", "Sindhi", ()),
    ("se", "sme", "Northern Sami", ()),
    ("sg", "sag", "Sango", ()),
    ("si", "sin", "Sinhala", ()),
    ("sk", "slk", "Slovak", ("slo",)),
    ("sl", "slv", "Slovenian", ()),
    ("sm", "smo", "Samoan", ()),
    ("sn", "sna", "Shona", ()),
    ("so", "som", "Somali", ()),
    ("sq", "sqi", "Albanian", ("alb",)),
    ("sr", "srp", "Serbian", ()),
    ("ss", "ssw", "Swati", ()),
    ("st", "sot", "Southern Sotho", ()),
    ("su", "sun", "Sundanese", ()),
    ("sv", "swe", "Swedish", ()),
    ("sw", "swa", "Swahili", ("swh",)),
    ("ta", "tam", "Tamil", ()),
    ("te", "tel", "Telugu", ()),
    ("tg", "tgk", "Tajik", ()),
    ("th", "tha", "Thai", ()),
    ("ti", "tir", "Tigrinya", ()),
    ("tk", "tuk", "Turkmen", ()),
    ("tl", "tgl", "Tagalog", ()),
    ("tn", "tsn", "Tswana", ()),
    ("to", "ton", "Tongan", ()),
    ("tr", "tur", "Turkish", ()),
    ("ts", "tso", "Tsonga", ()),
    ("tt", "tat", "Tatar", ()),
    ("ty", "tah", "Tahitian", ()),
    ("ug", "uig", "Uyghur", ()),
    ("uk", "ukr", "Ukrainian", ()),
    ("ur", "urd", "Urdu", ()),
    ("uz", "uzb", "Uzbek", ("uzn",)),
    ("ve", "ven", "Venda", ()),
    ("vi", "vie", "Vietnamese", ()),
    ("vo", "vol", "Volapük", ()),
    ("wa", "wln", "Walloon", ()),
    ("wo", "wol", "Wolof", ()),
    ("xh", "xho", "Xhosa", ()),
    ("yi", "yid", "Yiddish", ("ji", "ydd")),
    ("yo", "yor", "Yoruba", ()),
    ("zh", "zho", "Chinese", ("chi", "cmn")),
    ("zu", "zul", "Zulu", ()),
    # languages with an ISO 639-3 code only
    ("", "ace", "Acehnese", ()),
    ("", "acm", "Mesopotamian Arabic", ()),
    ("", "aeb", "Tunisian Arabic", ()),
    ("", "apc", "Levantine Arabic", ("ajp",)),
    ("", "ars", "Najdi Arabic", ()),
    ("", "ary", "Moroccan Arabic", ()),
    ("", "arz", "Egyptian Arabic", ()),
    ("", "ast", "Asturian", ()),
    ("", "awa", "Awadhi", ()),
    ("", "azb", "South Azerbaijani", ()),
    ("", "ban", "Balinese", ()),
    ("", "bar", "Bavarian", ()),
    ("", "bem", "Bemba", ()),
    ("", "bho", "Bhojpuri", ()),
    ("", "bjn", "Banjar", ()),
    ("", "bug", "Buginese", ()),
    ("", "ceb", "Cebuano", ()),
    ("", "ckb", "Central Kurdish", ()),
    ("", "crh", "Crimean Tatar", ()),
    ("", "doi", "Dogri", ()),
    ("", "dsb", "Lower Sorbian", ()),
    ("", "fil", "Filipino", ()),
    ("", "fon", "Fon", ()),
    ("", "fur", "Friulian", ()),
    ("", "grc", "Ancient Greek", ()),
    ("", "gsw", "Swiss German", ()),
    ("", "hak", "Hakka Chinese", ()),
    ("", "haw", "Hawaiian", ()),
    ("", "hil", "Hiligaynon", ()),
    ("", "hne", "Chhattisgarhi", ()),
    ("", "hsb", "Upper Sorbian", ()),
    ("", "ilo", "Ilocano", ()),
    ("", "jam", "Jamaican Patois", ()),
    ("", "kab", "Kabyle", ()),
    ("", "kam", "Kamba", ()),
    ("", "kmb", "Kimbundu", ()),
    ("", "kmr", "Northern Kurdish", ()),
    ("", "kok", "Konkani", ()),
    ("", "lij", "Ligurian", ()),
    ("", "lmo", "Lombard", ()),
    ("", "ltg", "Latgalian", ()),
    ("", "luo", "Luo", ()),
    ("", "lus", "Mizo", ()),
    ("", "mad", "Madurese", ()),
    ("", "mag", "Magahi", ()),
    ("", "mai", "Maithili", ()),
    ("", "min", "Minangkabau", ()),
    ("", "mni", "Manipuri", ()),
    ("", "mos", "Mossi", ()),
    ("", "nan", "Min Nan Chinese", ()),
    ("", "nap", "Neapolitan", ()),
    ("", "nds", "Low German", ()),
    ("", "nso", "Northern Sotho", ()),
    ("", "pap", "Papiamento", ()),
    ("", "pcm", "Nigerian Pidgin", ()),
    ("", "prs", "Dari", ()),
    ("", "sah", "Yakut", ()),
    ("", "sat", "Santali", ()),
    ("", "scn", "Sicilian", ()),
    ("", "sco", "Scots", ()),
    ("", "srn", "Sranan Tongo", ()),
    ("", "szl", "Silesian", ()),
    ("", "tet", "Tetum", ()),
    ("", "tpi", "Tok Pisin", ()),
    ("", "tum", "Tumbuka", ()),
    ("", "tzm", "Central Atlas Tamazight", ()),
    ("", "umb", "Umbundu", ()),
    ("", "vec", "Venetian", ()),
    ("", "war", "Waray", ()),
    ("", "wuu", "Wu Chinese", ()),
    ("", "yue", "Cantonese", ()),
    ("", "zgh", "Standard Moroccan Tamazight", ()),
)

# Names for a language in a script or region where the difference matters for translation.
_REGIONAL_NAMES: dict[str, str] = {
    "pt-BR": "Brazilian Portuguese",
    "pt-PT": "European Portuguese",
    "ar-EG": "Egyptian Arabic",
    "ar-MA": "Moroccan Arabic",
    "ar-TN": "Tunisian Arabic",
    "ar-IQ": "Mesopotamian Arabic",
    "ar-SA": "Saudi Arabic",
    "zh-Hans": "Simplified Chinese",
    "zh-Hant": "Traditional Chinese",
    "zh-CN": "Simplified Chinese",
    "zh-SG": "Simplified Chinese",
    "zh-TW": "Traditional Chinese",
    "zh-HK": "Traditional Chinese",
    "en-US": "American English",
    "en-GB": "British English",
    "en-AU": "Australian English",
    "en-CA": "Canadian English",
    "es-ES": "European Spanish",
    "es-MX": "Mexican Spanish",
    "es-419": "Latin American Spanish",
    "fr-FR": "French",
    "fr-CA": "Canadian French",
    "fr-CH": "Swiss French",
    "de-CH": "Swiss Standard German",
    "sr-Latn": "Serbian (Latin script)",
    "sr-Cyrl": "Serbian (Cyrillic script)",
    "uz-Latn": "Uzbek (Latin script)",
    "uz-Cyrl": "Uzbek (Cyrillic script)",
    "pa-Arab": "Shahmukhi Punjabi",
}

# ISO 639-3 codes of regional varieties and the base+region tag they correspond to,
# so that asking for "arz" finds a file tagged "ar-EG" and vice versa.
_VARIETY_TAGS: dict[str, str] = {
    "arz": "ar-EG",
    "ary": "ar-MA",
    "aeb": "ar-TN",
    "acm": "ar-IQ",
    "ars": "ar-SA",
}

_EXAMPLES = "de, deu, pt-BR, ar_EG, zh-Hans"
_TAG_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Language:
    """A normalized language tag.

    code: canonical tag, e.g. "de", "pt-BR", "zh-Hans", "arz".
    name: English name used in prompts, e.g. "Brazilian Portuguese".
    base: the language alone (ISO 639-1 where one exists, else ISO 639-3), e.g. "pt".
    """

    code: str
    name: str
    base: str

    @property
    def subtags(self) -> tuple[str, ...]:
        """Script and region subtags after the base, e.g. ("Hant", "TW")."""
        return tuple(self.code.split("-")[1:])

    def __str__(self) -> str:
        return self.code


@functools.lru_cache(maxsize=1)
def _code_index() -> dict[str, tuple[str, str]]:
    """lower-case code or alias -> (canonical base code, English name)."""
    index: dict[str, tuple[str, str]] = {}
    for iso1, iso3, name, aliases in _TABLE:
        canonical = iso1 or iso3
        for code in (iso1, iso3, *aliases):
            if code:
                index[code] = (canonical, name)
    return index


@functools.lru_cache(maxsize=1)
def _name_index() -> dict[str, str]:
    """lower-case English name -> canonical tag (base names and regional names)."""
    names = {name.lower(): iso1 or iso3 for iso1, iso3, name, _ in _TABLE}
    for tag, name in _REGIONAL_NAMES.items():
        names.setdefault(name.lower(), tag)
    return names


def known_codes() -> list[str]:
    """All canonical base codes in the table (ISO 639-1 where one exists)."""
    return sorted({iso1 or iso3 for iso1, iso3, _, _ in _TABLE})


def _unknown(code: str, why: str) -> DataError:
    candidates = list(_code_index()) + list(_name_index())
    close = difflib.get_close_matches(code.lower(), candidates, n=1, cutoff=0.7)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return DataError(
        f"unknown language {code!r} ({why}).{hint} Expected an ISO 639-1/639-3 code "
        f"such as {_EXAMPLES}, or an English name such as German."
    )


def _format_subtag(subtag: str) -> str:
    """Script subtags are Title case (Hans), regions upper case (BR, 419)."""
    if len(subtag) == 4 and subtag.isalpha():
        return subtag.title()
    if (len(subtag) == 2 and subtag.isalpha()) or (len(subtag) == 3 and subtag.isdigit()):
        return subtag.upper()
    raise ValueError(subtag)


@functools.lru_cache(maxsize=1)
def _named_scripts() -> frozenset[str]:
    """base-Script tags worth keeping ("zh-Hans"); other scripts are a language's default."""
    return frozenset(t for t in _REGIONAL_NAMES if len(t.split("-")[1]) == 4)


def _drop_default_scripts(base: str, subtags: list[str]) -> list[str]:
    """FLORES-style "deu_Latn" -> "de": keep a script subtag only where it names a variety."""
    return [s for s in subtags if len(s) != 4 or f"{base}-{s}" in _named_scripts()]


def _subtag_name(base: str, base_name: str, subtags: list[str]) -> str:
    """Name from the most specific known tag ("zh-Hant-TW", then "zh-Hant", "zh-TW")."""
    for tag in ("-".join([base, *subtags]), *(f"{base}-{s}" for s in subtags)):
        if tag in _REGIONAL_NAMES:
            return _REGIONAL_NAMES[tag]
    return base_name


def normalize_language(code: str) -> Language:
    """Parse a language code, locale or English name into a :class:`Language`.

    Unknown region or script on a known language keeps the subtag in the code and the
    base name ("de-AT" -> German).  Raises DataError for anything that is not a language.
    """
    if not isinstance(code, str) or not code.strip():
        raise DataError(f"empty language code; expected an ISO 639-1/639-3 code such as {_EXAMPLES}.")
    text = code.strip()
    by_name = _name_index().get(text.lower())
    if by_name is not None:
        text = by_name
    text = text.split(".")[0].split("@")[0]  # locale suffixes: de_DE.UTF-8, sr_RS@latin
    if not _TAG_RE.match(text):
        raise _unknown(code, "not a language tag")
    primary, *rest = re.split(r"[-_]", text)
    entry = _code_index().get(primary.lower())
    if entry is None:
        raise _unknown(code, f"no language with code {primary.lower()!r}")
    base, base_name = entry
    try:
        subtags = [_format_subtag(s) for s in rest]
    except ValueError as exc:
        raise _unknown(code, f"{exc.args[0]!r} is neither a script nor a region subtag") from None
    subtags = _drop_default_scripts(base, subtags)
    name = _subtag_name(base, base_name, subtags)
    return Language(code="-".join([base, *subtags]), name=name, base=base)


def language_name(code: str) -> str:
    """English name of a language code, e.g. "pt-BR" -> "Brazilian Portuguese"."""
    return normalize_language(code).name


def _variety_view(lang: Language) -> Language:
    """A 639-3 regional variety seen as base+region ("arz" -> ar-EG), else unchanged."""
    tag = _VARIETY_TAGS.get(lang.code)
    if tag is None:
        return lang
    return Language(code=tag, name=lang.name, base=tag.split("-")[0])


def match_score(wanted: Language, found: Language) -> int:
    """How well a tag found in data fits the language asked for: 0 (no) .. 3 (exact).

    3: same base and same subtags; 2: same base, the request has no subtag (asked "de",
    found "de-DE") or the data has none; 1: same base, different subtags.  A 639-3
    variety code matches its base+region tag ("arz" == "ar-EG").
    """
    wanted, found = _variety_view(wanted), _variety_view(found)
    if wanted.base != found.base:
        return 0
    if wanted.subtags == found.subtags:
        return 3
    if not wanted.subtags or not found.subtags:
        return 2
    return 1


def try_normalize(code: str) -> Language | None:
    """normalize_language, or None where the text is not a language (for scanning data)."""
    try:
        return normalize_language(code)
    except DataError:
        return None
