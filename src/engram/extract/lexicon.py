"""Small word lists the rule-based extractor relies on (all lower case)."""

from __future__ import annotations

__all__ = [
    "ADVERBS",
    "CITIES",
    "CONTINENTS_REGIONS",
    "COUNTRIES",
    "EVENT_WORDS",
    "FAMILY",
    "IRREGULAR_PAST",
    "NOT_NAMES",
    "ORG_SUFFIXES",
    "PLACE_WORDS",
    "PRODUCTS",
    "SMALL_TALK",
    "VAGUE_OBJECTS",
    "words",
]


def words(text: str) -> frozenset[str]:
    """The words of a blank-separated list, "_" standing for a space."""
    return frozenset(w.replace("_", " ") for w in text.split())


COUNTRIES = words(
    """afghanistan albania algeria argentina armenia australia austria bahamas bangladesh
    belgium bolivia brazil bulgaria cambodia cameroon canada chile china colombia costa_rica
    croatia cuba cyprus czechia czech_republic denmark ecuador egypt england estonia ethiopia
    fiji finland france germany ghana greece guatemala haiti honduras hungary iceland india
    indonesia iran iraq ireland israel italy jamaica japan jordan kenya korea south_korea
    north_korea kuwait laos latvia lebanon lithuania luxembourg madagascar malaysia maldives
    malta mexico mongolia morocco nepal netherlands holland new_zealand nicaragua nigeria norway
    pakistan panama paraguay peru philippines poland portugal puerto_rico qatar romania russia
    saudi_arabia scotland senegal serbia singapore slovakia slovenia somalia spain sri_lanka
    sweden switzerland syria taiwan tanzania thailand tunisia turkey uganda ukraine
    united_kingdom uk united_states usa us america uruguay venezuela vietnam wales zambia
    zimbabwe"""
)

CITIES = words(
    """amsterdam athens atlanta austin bangkok barcelona beijing berlin bogota boston brooklyn
    brussels budapest buenos_aires cairo calgary cape_town chicago copenhagen dallas delhi
    new_delhi denver detroit dubai dublin edinburgh florence frankfurt geneva glasgow hamburg
    havana helsinki hong_kong honolulu houston istanbul jakarta jerusalem johannesburg kyoto
    lagos las_vegas lima lisbon london los_angeles la madrid manchester manila marseille
    melbourne miami milan minneapolis montreal moscow mumbai munich nairobi naples nashville
    new_orleans new_york new_york_city nyc nice orlando osaka oslo ottawa paris perth
    philadelphia phoenix portland porto prague quebec reykjavik rio rio_de_janeiro rome
    san_antonio san_diego san_francisco santiago sao_paulo seattle seoul shanghai singapore
    stockholm sydney taipei tokyo toronto vancouver venice vienna warsaw washington zurich
    hawaii alaska california texas florida oregon colorado arizona nevada utah montana
    georgia virginia carolina north_carolina south_carolina maine vermont ohio michigan
    illinois indiana kentucky tennessee alabama louisiana wisconsin minnesota iowa kansas
    missouri oklahoma arkansas mississippi massachusetts connecticut pennsylvania maryland
    delaware idaho wyoming nebraska new_jersey new_mexico bali tuscany provence patagonia
    yosemite yellowstone"""
)

CONTINENTS_REGIONS = words(
    """africa antarctica asia europe oceania north_america south_america latin_america
    middle_east scandinavia caribbean the_caribbean east_coast west_coast midwest
    the_east_coast the_west_coast the_midwest the_alps the_rockies"""
)

# A capitalised span ending in one of these names a place.
PLACE_WORDS = words(
    """park beach lake river mountain mountains island islands bay valley canyon falls forest
    street avenue road city town county state coast trail national_park hills"""
)

ORG_SUFFIXES = words(
    """inc inc. corp corp. corporation llc ltd ltd. co co. company group university college
    school academy institute hospital clinic bank foundation association society club church
    museum library center centre studio studios cafe café restaurant bakery bar gym agency
    labs lab team league council committee department ministry union network records press
    shelter organization organisation charity store shop"""
)

EVENT_WORDS = words(
    """festival conference convention summit marathon parade fair expo concert tournament
    championship cup olympics games ceremony gala party show workshop retreat camp
    christmas thanksgiving halloween easter hanukkah diwali ramadan eid new_year new_years
    new_year's valentine's pride"""
)

PRODUCTS = words(
    """iphone ipad macbook android pixel kindle xbox playstation ps5 nintendo switch tesla
    prius fitbit airpods spotify netflix instagram facebook tiktok youtube twitter chatgpt
    minecraft fortnite zoom"""
)

# Family and social roles: "my sister Anna" gives a HAS_SISTER fact.
FAMILY = {
    "sister": "SISTER", "sis": "SISTER", "brother": "BROTHER", "bro": "BROTHER",
    "mom": "MOTHER", "mum": "MOTHER", "mother": "MOTHER", "dad": "FATHER", "father": "FATHER",
    "son": "SON", "daughter": "DAUGHTER", "wife": "WIFE", "husband": "HUSBAND",
    "partner": "PARTNER", "boyfriend": "BOYFRIEND", "girlfriend": "GIRLFRIEND",
    "fiance": "FIANCE", "fiancé": "FIANCE", "fiancee": "FIANCE", "fiancée": "FIANCE",
    "grandma": "GRANDMOTHER", "grandmother": "GRANDMOTHER", "grandpa": "GRANDFATHER",
    "grandfather": "GRANDFATHER", "aunt": "AUNT", "uncle": "UNCLE", "cousin": "COUSIN",
    "niece": "NIECE", "nephew": "NEPHEW", "friend": "FRIEND", "buddy": "FRIEND",
    "roommate": "ROOMMATE", "colleague": "COLLEAGUE", "coworker": "COLLEAGUE",
    "co-worker": "COLLEAGUE", "boss": "BOSS", "manager": "BOSS", "neighbor": "NEIGHBOR",
    "neighbour": "NEIGHBOR", "mentor": "MENTOR", "teacher": "TEACHER", "coach": "COACH",
    "dog": "DOG", "puppy": "DOG", "cat": "CAT", "kitten": "CAT", "pet": "PET",
    "teammate": "TEAMMATE", "classmate": "CLASSMATE", "bestie": "FRIEND",
}  # fmt: skip

# Capitalised words that are not names even mid-sentence.
NOT_NAMES = words(
    """i i'm i've i'll i'd ok okay oh wow yes yeah yep no nope hey hi hello thanks thank lol
    omg haha monday tuesday wednesday thursday friday saturday sunday january february march
    april may june july august september october november december god mr mrs ms dr"""
)

ADVERBS = words(
    """really just also always usually still never often recently finally actually even
    definitely totally kinda sorta truly absolutely already currently sometimes seriously
    honestly probably mostly recently lately literally basically personally especially
    then now once certainly generally normally typically genuinely deeply so too all
    both only newly eventually highly"""
)

IRREGULAR_PAST = {
    "went": "go", "took": "take", "made": "make", "got": "get", "had": "have", "did": "do",
    "saw": "see", "ran": "run", "bought": "buy", "met": "meet", "found": "find",
    "began": "begin", "felt": "feel", "left": "leave", "built": "build", "gave": "give",
    "came": "come", "became": "become", "wrote": "write", "read": "read", "taught": "teach",
    "thought": "think", "brought": "bring", "caught": "catch", "won": "win", "lost": "lose",
    "spent": "spend", "sold": "sell", "told": "tell", "heard": "hear", "kept": "keep",
    "held": "hold", "sang": "sing", "swam": "swim", "drove": "drive", "flew": "fly",
    "rode": "ride", "ate": "eat", "drank": "drink", "grew": "grow", "knew": "know",
    "drew": "draw", "wore": "wear", "broke": "break", "chose": "choose", "fell": "fall",
    "forgot": "forget", "hit": "hit", "put": "put", "set": "set", "sent": "send",
    "slept": "sleep", "spoke": "speak", "stood": "stand", "threw": "throw", "woke": "wake",
    "paid": "pay", "said": "say", "led": "lead", "fed": "feed", "dug": "dig", "hung": "hang",
    "shot": "shoot", "struck": "strike", "taken": "take", "seen": "see", "done": "do",
    "gone": "go", "been": "be", "was": "be", "were": "be", "joined": "join",
    "sat": "sit", "lay": "lie", "hid": "hide", "rang": "ring", "shook": "shake",
    "stuck": "stick", "tore": "tear", "lit": "light", "meant": "mean", "dealt": "deal",
    "fought": "fight", "fled": "flee", "lent": "lend", "bent": "bend", "understood": "understand",
    "overcame": "overcome", "undertook": "undertake", "withdrew": "withdraw", "froze": "freeze",
    "blew": "blow", "bit": "bite", "sought": "seek", "swore": "swear", "beat": "beat",
    "cost": "cost", "cut": "cut", "quit": "quit", "let": "let", "shut": "shut", "spread": "spread",
}  # fmt: skip

# Objects that carry no information on their own ("I love that!").
VAGUE_OBJECTS = words(
    """it that this those these them you u ya your yours one ones there here so some lot
    lots more much stuff things thing something anything everything nothing idea way time
    moment chat talk hearing hear it! sure"""
)

# Sentences made only of these words (and punctuation) are small talk.
SMALL_TALK = words(
    """hi hey hello yo thanks thank you thx ty lol haha hahaha omg wow cool nice great awesome
    sweet ok okay yes yeah yep sure no nope bye goodbye see ya later take care glad to hear
    that's that is so good amazing love it totally agree same here me too oh ah aw aww
    congrats congratulations sounds fun really definitely absolutely true right good luck
    night morning evening afternoon happy for have a day talk soon catch up man dude bro sis
    buddy pal friend welcome anytime course of np problem xoxo cheers"""
)
