"""The local extractor: who said what about whom, as self-contained third-person facts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engram.extract.local import LocalExtractor
from engram.extract.types import Episode, EpisodeMessage, ExtractedFact, Extraction

# Monday 8 May 2023
REF = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def _msg(
    content: str, role: str = "Caroline", role_type: str = "user", uid: str = "m1"
) -> EpisodeMessage:
    return EpisodeMessage(uuid=uid, role=role, role_type=role_type, content=content, created_at=REF)


def extract(
    content: str, role: str = "Caroline", role_type: str = "user", user_name: str | None = None
) -> Extraction:
    episode = Episode("u1", "s1", [_msg(content, role, role_type)], user_name=user_name)
    return LocalExtractor().extract(episode)


def only(content: str, relation: str, **kw: str) -> ExtractedFact:
    facts = [f for f in extract(content, **kw).facts if f.relation == relation]
    assert len(facts) == 1, extract(content, **kw).facts
    return facts[0]


@pytest.mark.parametrize(
    ("text", "relation", "obj", "fact"),
    [
        ("I live in Berlin.", "LIVES_IN", "Berlin", "Caroline lives in Berlin."),
        ("I work at Acme Corp.", "WORKS_AT", "Acme Corp", "Caroline works at Acme Corp."),
        ("I'm married to Tom.", "MARRIED_TO", "Tom", "Caroline is married to Tom."),
        ("I love painting.", "LIKES", "painting", "Caroline loves painting."),
        ("I really enjoy pottery!", "LIKES", "pottery", "Caroline really enjoys pottery."),
        ("I'm into pottery these days.", "LIKES", "pottery",
         "Caroline is into pottery these days."),
        ("I don't like spicy food.", "DISLIKES", "spicy food", "Caroline doesn't like spicy food."),
        ("I hate traffic jams.", "DISLIKES", "traffic jams", "Caroline hates traffic jams."),
        ("I joined a book club.", "JOINED", "book club", "Caroline joined a book club."),
        ("I started learning the violin.", "STARTED", "learning the violin",
         "Caroline started learning the violin."),
        ("I finished my first marathon.", "FINISHED", "first marathon",
         "Caroline finished their first marathon."),
        ("I bought a new car.", "BOUGHT", "car", "Caroline bought a new car."),
        ("I have a dog named Max.", "HAS_DOG", "Max", "Caroline has a dog named Max."),
        ("I am a transgender woman.", "IS", "transgender woman",
         "Caroline is a transgender woman."),
        ("I'm a nurse.", "IS", "nurse", "Caroline is a nurse."),
        ("I work as a teacher.", "WORKS_AS", "teacher", "Caroline works as a teacher."),
        ("I'm planning to visit Japan.", "PLANS_TO", "visit Japan",
         "Caroline is planning to visit Japan."),
        ("I'm keen on counseling.", "INTERESTED_IN", "counseling",
         "Caroline is keen on counseling."),
        ("I ran a charity race.", "RAN", "charity race", "Caroline ran a charity race."),
    ],
)  # fmt: skip
def test_a_first_person_statement_becomes_a_fact_about_the_speaker(
    text: str, relation: str, obj: str, fact: str
) -> None:
    found = only(text, relation)
    assert (found.subject, found.object, found.fact) == ("Caroline", obj, fact)
    assert found.source_message == "m1"


def test_moving_closes_the_old_home_and_is_dated() -> None:
    fact = only("I moved to Lisbon last year.", "LIVES_IN")
    assert fact.object == "Lisbon" and fact.exclusive
    assert fact.fact == "Caroline moved to Lisbon in 2022."
    assert fact.valid_at == datetime(2022, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "relation", "exclusive"),
    [
        ("I live in Berlin.", "LIVES_IN", True),
        ("I work at Acme Corp.", "WORKS_AT", True),
        ("I'm married to Tom.", "MARRIED_TO", True),
        ("I love painting.", "LIKES", False),
        ("I joined a book club.", "JOINED", False),
        ("I have a dog named Max.", "HAS_DOG", False),
    ],
)
def test_exclusive_relations_are_flagged(text: str, relation: str, exclusive: bool) -> None:
    assert only(text, relation).exclusive is exclusive


def test_a_relative_time_is_resolved_in_valid_at_and_in_the_sentence() -> None:
    fact = only("I went to a LGBTQ support group yesterday and it was so powerful.", "WENT_TO")
    assert fact.object == "LGBTQ support group"
    assert fact.valid_at == datetime(2023, 5, 7, tzinfo=UTC)
    assert fact.fact == (
        "Caroline went to a LGBTQ support group on 7 May 2023 and it was so powerful."
    )


def test_an_activity_last_saturday() -> None:
    fact = only("I went hiking last Saturday.", "DID")
    assert (fact.object, fact.valid_at) == ("hiking", datetime(2023, 5, 6, tzinfo=UTC))
    assert fact.fact == "Caroline went hiking on 6 May 2023."


def test_without_a_time_expression_the_message_time_is_valid_at() -> None:
    assert only("I love painting.", "LIKES").valid_at == REF


def test_a_plan_holds_from_when_it_is_stated() -> None:
    fact = only("I'm planning to visit Japan next month.", "PLANS_TO")
    assert fact.valid_at == REF
    assert fact.fact == "Caroline is planning to visit Japan in June 2023."


def test_family_members_become_relations_and_their_own_facts() -> None:
    result = extract("My sister Anna lives in Boston.")
    facts = {(f.subject, f.relation, f.object): f for f in result.facts}
    assert facts[("Caroline", "HAS_SISTER", "Anna")].fact == "Caroline has a sister named Anna."
    anna = facts[("Anna", "LIVES_IN", "Boston")]
    assert anna.fact == "Caroline's sister Anna lives in Boston." and anna.exclusive
    labels = {e.name: e.label for e in result.entities}
    assert labels["Anna"] == "person" and labels["Boston"] == "place"


def test_a_husband_is_a_marriage() -> None:
    fact = only("My husband Tom made dinner.", "MARRIED_TO")
    assert (fact.subject, fact.object, fact.exclusive) == ("Caroline", "Tom", True)
    assert fact.fact == "Tom is Caroline's husband."


def test_named_entities_are_labelled() -> None:
    result = extract("I visited Paris with my friend Jean and we saw the Louvre Museum.")
    labels = {e.name: e.label for e in result.entities}
    assert labels["Paris"] == "place"
    assert labels["Jean"] == "person"
    assert labels["Louvre Museum"] == "organization"
    assert labels["Caroline"] == "person"
    visited = [f for f in result.facts if f.relation == "VISITED"]
    assert visited and visited[0].object == "Paris"


def test_every_fact_names_extracted_entities() -> None:
    result = extract(
        "I moved to Lisbon last year. I love painting and I joined a pottery class at "
        "Clay Studio. My brother Sam works at Google."
    )
    names = {e.name for e in result.entities}
    assert result.facts
    for fact in result.facts:
        assert fact.subject in names and fact.object in names


def test_a_user_role_takes_the_users_name() -> None:
    fact = only("I live in Berlin.", "LIVES_IN", role="user", user_name="Dana Smith")
    assert (fact.subject, fact.fact) == ("Dana Smith", "Dana Smith lives in Berlin.")


def test_an_unnamed_user_is_user_and_an_assistant_is_assistant() -> None:
    assert only("I live in Berlin.", "LIVES_IN", role="user").subject == "user"
    assert only("I live in Berlin.", "LIVES_IN", role="", role_type="assistant").subject == (
        "assistant"
    )


@pytest.mark.parametrize(
    "text",
    ["lol thanks!", "Hey Mel! Good to see you!", "Wow, that's so cool!", "ok", "Thank you so much"],
)
def test_small_talk_gives_nothing(text: str) -> None:
    assert extract(text).facts == []


@pytest.mark.parametrize(
    "text", ["Do you like hiking?", "Have you ever been to Paris?", "Are you into pottery"]
)
def test_questions_are_not_facts_about_the_speaker(text: str) -> None:
    assert extract(text).facts == []


def test_the_statement_beside_a_question_is_kept() -> None:
    result = extract("I finished another pottery project - want to see a pic?")
    assert [f.relation for f in result.facts] == ["FINISHED"]


def test_the_listener_is_named_and_the_speaker_holds_the_view() -> None:
    context = [_msg("I painted a sunset.", role="Caroline", uid="m0")]
    message = _msg("Your painting of the lake is beautiful.", role="Melanie", uid="m1")
    result = LocalExtractor().extract(Episode("u1", "s1", [message], context=context))
    (fact,) = result.facts
    assert fact.subject == "Melanie" and fact.relation == "BELIEVES"
    assert fact.fact == "Melanie thinks that Caroline's painting of the lake is beautiful."


def test_context_messages_are_not_extracted_from() -> None:
    context = [_msg("I live in Berlin.", uid="m0")]
    message = _msg("Thanks!", uid="m1")
    assert LocalExtractor().extract(Episode("u1", "s1", [message], context=context)).facts == []


def test_system_and_tool_messages_are_ignored() -> None:
    messages = [
        _msg("I live in Berlin.", role="system", role_type="system"),
        _msg("I live in Berlin.", role="search", role_type="tool", uid="m2"),
    ]
    assert LocalExtractor().extract(Episode("u1", "s1", messages)).facts == []


def test_facts_cite_the_message_they_come_from() -> None:
    messages = [
        _msg("I live in Berlin.", uid="a"),
        _msg("I work at Acme Corp.", role="Melanie", uid="b"),
    ]
    facts = LocalExtractor().extract(Episode("u1", "s1", messages)).facts
    by_relation = {f.relation: f for f in facts}
    assert by_relation["LIVES_IN"].source_message == "a"
    assert by_relation["WORKS_AT"].source_message == "b"
    assert by_relation["WORKS_AT"].subject == "Melanie"


def test_extraction_is_deterministic() -> None:
    text = (
        "Yesterday I went to a concert in Chicago with my friend Jo. I'm planning to learn "
        "the guitar. Staying positive is key. My kids love the beach."
    )
    first = extract(text)
    assert first.facts and first == extract(text)


def test_a_sentence_about_it_stays_with_the_fact_it_follows() -> None:
    result = extract("I signed up for a pottery class. It's like therapy for me.")
    (fact,) = result.facts
    assert fact.relation == "JOINED" and fact.object == "pottery class"
    assert fact.fact == ("Caroline signed up for a pottery class; it's like therapy for Caroline.")


def test_the_extractor_has_a_stable_id() -> None:
    assert LocalExtractor().id == "local/rules-v1"


def _conversation(*turns: tuple[str, str]) -> Extraction:
    messages = [_msg(text, role=role, uid=f"m{i}") for i, (role, text) in enumerate(turns)]
    return LocalExtractor().extract(Episode("u1", "s1", messages))


def test_a_statement_without_a_pronoun_is_attributed_to_its_speaker() -> None:
    result = extract("Just started doing aerial yoga, it's great.", role="Maria")
    (fact,) = result.facts
    assert (fact.subject, fact.relation, fact.object) == ("Maria", "STARTED", "doing aerial yoga")
    assert fact.fact == "Maria just started doing aerial yoga, it's great."


def test_we_includes_the_speaker() -> None:
    fact = only("We went camping in the mountains last weekend.", "DID")
    assert fact.subject == "Caroline" and fact.object == "camping"
    assert (
        fact.fact
        == "Caroline and others went camping in the mountains on the weekend of 6 May 2023."
    )


def test_a_general_statement_is_the_speakers_view() -> None:
    fact = only("Staying positive is key.", "BELIEVES")
    assert fact.subject == "Caroline"
    assert fact.fact == "Caroline thinks that staying positive is key."


def test_advice_to_the_listener_is_kept_as_advice() -> None:
    result = _conversation(
        ("Jon", "I lost my job last month."),
        ("Gina", "Don't be scared to reach out to people in your field."),
    )
    (advice,) = [f for f in result.facts if f.relation == "ADVISES"]
    assert advice.subject == "Gina" and advice.source_message == "m1"
    assert advice.fact == "Gina advises Jon not to be scared to reach out to people in Jon's field."


def test_a_sentence_that_mentions_the_speaker_is_about_them() -> None:
    fact = only("The support group has made me feel accepted.", "RELATES_TO")
    assert (fact.subject, fact.object) == ("Caroline", "support group")
    assert fact.fact == "The support group has made Caroline feel accepted."


@pytest.mark.parametrize(
    "text", ["Good to see you again!", "Long time no see, how's it going", "Sounds like a plan!"]
)
def test_pleasantries_are_not_views(text: str) -> None:
    assert _conversation(("Tim", "Hi!"), ("John", text)).facts == []


def test_looking_forward_is_not_a_negation() -> None:
    fact = only("I can't wait to see the final product!", "LOOKS_FORWARD_TO")
    assert fact.object == "see the final product" and fact.valid_at == REF


def test_a_new_job_is_where_the_speaker_works() -> None:
    fact = only("I got a job at Google last month.", "WORKS_AT")
    assert (fact.object, fact.exclusive) == ("Google", True)
    assert fact.valid_at == datetime(2023, 4, 1, tzinfo=UTC)


def test_an_unnamed_user_who_gives_a_name() -> None:
    result = extract("My name is Dana.", role="user")
    (fact,) = result.facts
    assert (fact.subject, fact.relation, fact.object) == ("user", "NAMED", "Dana")
    assert fact.exclusive and fact.fact == "User's name is Dana."


@pytest.mark.parametrize(
    ("text", "relation", "obj"),
    [
        ("I grew up in Ohio.", "GREW_UP_IN", "Ohio"),
        ("I'm from Sweden.", "FROM", "Sweden"),
        ("I'm dating Alex.", "DATING", "Alex"),
        ("I'm studying at Harvard University.", "STUDIES_AT", "Harvard University"),
        ("I visited Tokyo in March 2022.", "VISITED", "Tokyo"),
    ],
)
def test_where_people_come_from_study_and_go(text: str, relation: str, obj: str) -> None:
    assert only(text, relation).object == obj


def test_an_assistants_views_and_advice_are_not_remembered() -> None:
    messages = [
        _msg("I moved to Lisbon last year.", role="user", uid="u"),
        _msg(
            "Lisbon is a wonderful city. Make sure you try the pasteis de nata.",
            role="",
            role_type="assistant",
            uid="a",
        ),
    ]
    facts = LocalExtractor().extract(Episode("u1", "s1", messages, user_name="Dana")).facts
    assert [(f.subject, f.relation, f.object) for f in facts] == [("Dana", "LIVES_IN", "Lisbon")]
