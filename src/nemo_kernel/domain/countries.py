"""Country codes for data residency: where a cluster is, and where a workload's data may be.

A code is an ISO 3166-1 alpha-2 code in use (the 249 assigned ones), or ``EU``: reserved by ISO for the European
Union, it is the country of the clusters a join petition makes (``NEMO_MANAGED_COUNTRY``'s default) when all that is
known is "somewhere in the EU". It is a code like the others, not a group: a residency of ``[EU]`` admits the clusters
registered as ``EU``, not those in ``DE``; list the member states to admit them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Strict

ISO_3166_ALPHA2 = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO
    FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE
    JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO
    MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
    PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM
    TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()  # noqa: SIM905 (249 codes read as a table, not as 249 quoted strings one per line)
)
"""The assigned ISO 3166-1 alpha-2 codes (249; the same as tzdata's ``iso3166.tab``)."""

COUNTRY_CODES = ISO_3166_ALPHA2 | {"EU"}
"""What a cluster's ``country``, ``placement.countries`` and ``press.data_residency`` accept."""


def _check_country(code: str) -> str:
    if code not in COUNTRY_CODES:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code in use (such as ES, DE, FR) nor EU")
    return code


CountryCode = Annotated[str, Strict(), AfterValidator(_check_country)]
"""A country for data residency: an assigned ISO 3166-1 alpha-2 code (upper case), or ``EU``."""
