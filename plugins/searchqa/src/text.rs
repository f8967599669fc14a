//! Text: the passages' prose, the sentence forms facts are read back from, and the originals' fixed strings.
//!
//! Writing and reading share one table of sentence forms ([`Relation`]), so the expert can only read what a
//! passage actually says: it looks for the sentence whose subject is the passage's title, never at the
//! knowledge base.
//!
//! A passage enters an observation as Search-R1's corpus stores one (`wiki-18.jsonl`, README "Use your own
//! corpus"): `contents` is `"{title}"` (in double quotes), a newline, then the text. Each original formats the
//! retriever's top passages from that field in its own way (see [`search_r1_information`] and
//! [`verl_agent_information`]).

use crate::kb::{EntityRef, Kb, Medium, Passage};

/// Search-R1's instruction, up to the question (`make_prefix` of Search-R1's `scripts/data_process/nq_search.py`;
/// `infer.py` has the same text).
pub const INSTRUCTION: &str = "Answer the given question. You must conduct reasoning inside <think> and </think> \
first every time you get new information. After reasoning, if you find you lack some knowledge, you can call a \
search engine by <search> query </search> and it will return the top searched results between <information> and \
</information>. You can search as many times as your want. If you find no further external knowledge needed, you \
can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For example, \
<answer> Beijing </answer>.";

/// Search-R1's observation after a response with neither a search nor an answer, without the newline before and
/// after it that `execute_predictions` (`search_r1/llm_agent/generation.py`) adds.
pub const INVALID_ACTION: &str = "My previous action is invalid. If I want to search, I should put the query between \
<search> and </search>. If I want to give the final answer, I should put the answer between <answer> and \
</answer>. Let me try again.";

/// Search-R1's user message: the instruction and the question (`?` appended, as its data scripts do), ending in a
/// newline.
pub fn search_r1_prompt(question: &str) -> String {
    format!("{INSTRUCTION} Question: {question}?\n")
}

/// verl-agent's user message on every turn without history (`SEARCH_TEMPLATE_NO_HIS` of
/// `agent_system/environments/prompts/search.py`, including its leading newline and the space ending the
/// `<think>` line). Its question is the dataset's, which Search-R1's scripts end in `?`.
pub fn verl_agent_prompt(question: &str) -> String {
    format!(
        "\nYou are an expert agent tasked with answering the given question step-by-step.\n\
         Your question: {question}?\n\
         \n\
         Now it's your turn to respond for the current step.\n\
         You should first conduct reasoning process. This process MUST be enclosed within <think> </think> tags. \n\
         After completing your reasoning, choose only one of the following actions (do not perform both):\n\
         (1) If you find you lack some knowledge, you can call a search engine to get more external information \
         using format: <search> your query </search>.\n\
         (2) If you have enough knowledge to answer the question confidently, provide your final answer within \
         <answer> </answer> tags, without detailed illustrations. For example, <answer>Beijing</answer>.\n"
    )
}

/// The user message of the config's `instruction = "brief"` (atod's, not an original's): what the originals'
/// instructions ask, in two lines, then the question. It keeps one `<answer>` example, as both originals' do,
/// so that Search-R1's reward (which skips the prompt's example) reads it alike.
pub fn brief_prompt(question: &str) -> String {
    format!(
        "Answer the question. Think inside <think> </think>, then either search with <search> query </search> or \
         answer with <answer> answer </answer>.\nQuestion: {question}?\n"
    )
}

/// Search-R1's observation after a search: `_passages2string` splits each passage's `contents` at its first
/// newline into the quoted title and the text and writes `Doc {i}(Title: {title}) {text}\n`; the loop strips the
/// result and wraps it as `\n\n<information>{results}</information>\n\n`.
pub fn search_r1_information(passages: &[&Passage]) -> String {
    let mut results = String::new();
    for (i, passage) in passages.iter().enumerate() {
        results += &format!("Doc {}(Title: \"{}\") {}\n", i + 1, passage.title, passage.text);
    }
    format!("\n\n<information>{}</information>\n\n", crate::tags::py_strip(&results))
}

/// verl-agent's observation after a search, as its search environment (SkyRL-gym's `SearchEnv` and
/// `SearchToolGroup`, vendored under `agent_system/environments/env_package/search/third_party/skyrl_gym`) writes
/// it into the chat history: `Doc {i}: {contents}\n` per passage, the whole string JSON-encoded as
/// `json.dumps({"result": ...})` (so newlines and quotes appear escaped), wrapped as
/// `\n<information>{json}</information>\n`. The agent is shown it stripped (`envs.py`, `_sync_step`).
pub fn verl_agent_information(passages: &[&Passage]) -> String {
    let mut results = String::new();
    for (i, passage) in passages.iter().enumerate() {
        let contents = format!("\"{}\"\n{}", passage.title, passage.text);
        results += &format!("Doc {}: {}\n", i + 1, crate::tags::py_strip(&contents));
    }
    format!("\n<information>{{\"result\": {}}}</information>\n", crate::tags::json_string(&results))
}

/// The observation after a search in the config's `information = "plain"` form (atod's, not an original's):
/// `<information>Doc {i} (Title: {title}) {text}\n...</information>`, each passage on one line (its paragraphs
/// joined by a space), nothing escaped or quoted. A name then reads the same everywhere it occurs (` X`), where the
/// originals' forms put it after a quote or an escaped newline in places, which a byte-level BPE encodes as other
/// tokens.
pub fn plain_information(passages: &[&Passage]) -> String {
    let docs: Vec<String> = passages
        .iter()
        .enumerate()
        .map(|(i, p)| format!("Doc {} (Title: {}) {}", i + 1, p.title, p.text.replace('\n', " ")))
        .collect();
    format!("<information>{}</information>", docs.join("\n"))
}

/// A passage cut to its first paragraph, for the config's `passages = "facts"`: the sentences that state its
/// title's own facts (every sentence form [`Relation::read`] reads is there), without the paragraphs about
/// related entities. Its mentions are those the first paragraph names.
pub fn facts_passage(kb: &Kb, passage: &Passage) -> Passage {
    let text = passage.text.split('\n').next().unwrap_or_default().to_owned();
    let mentions = passage.mentions.iter().copied().filter(|&e| names_word(&text, kb.name(e))).collect();
    Passage { title: passage.title.clone(), text, mentions }
}

/// Whether `text` holds `name` as whole words.
fn names_word(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

/// A typed fact that a passage states about its own title, in one fixed sentence form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// A person's birthplace (a city).
    BirthCity,
    /// A person's year of birth.
    BirthYear,
    /// The organisation a person worked for.
    Employer,
    /// The person who founded an organisation.
    Founder,
    /// The year an organisation was founded.
    FoundedYear,
    /// The director of a film or the author of a novel.
    Creator,
    /// The year a film was released or a novel published.
    WorkYear,
    /// The country a city lies in.
    Country,
    /// A city's population.
    Population,
    /// A country's capital.
    Capital,
}

impl Relation {
    /// What the expert's thought calls the fact.
    pub fn describe(self) -> &'static str {
        match self {
            Self::BirthCity => "birthplace",
            Self::BirthYear => "year of birth",
            Self::Employer => "employer",
            Self::Founder => "founder",
            Self::FoundedYear => "founding year",
            Self::Creator => "creator",
            Self::WorkYear => "year of release",
            Self::Country => "country",
            Self::Population => "population",
            Self::Capital => "capital",
        }
    }

    /// The sentence of a passage's text that states this fact about `title` (the one [`Relation::read`] reads),
    /// whole and as written, if the passage states it.
    pub fn quote<'a>(self, title: &str, text: &'a str) -> Option<&'a str> {
        match self {
            Self::BirthCity | Self::BirthYear => sentence_from(text, &format!("{title} was born in ")),
            Self::Employer => sentence_from(text, &format!("{title} worked for ")),
            Self::Founder | Self::FoundedYear => sentence_from(text, &format!("{title} was founded by ")),
            Self::Creator => sentence_from(text, &format!("{title} was directed by "))
                .or_else(|| sentence_from(text, &format!("{title} was written by "))),
            Self::WorkYear => sentence_from(text, &format!("{title} is a film released in "))
                .or_else(|| sentence_from(text, &format!("{title} is a novel published in "))),
            Self::Country => sentence_from(text, &format!("{title} is a city in ")),
            Self::Population => sentence_from(text, &format!("{title} has a population of ")),
            Self::Capital => sentence_from(text, &format!("The capital of {title} is ")),
        }
    }

    /// Reads the fact about `title` from a passage's text, if the passage states it.
    pub fn read(self, title: &str, text: &str) -> Option<String> {
        let value = match self {
            Self::BirthCity => sentence_after(text, &format!("{title} was born in "))?.rsplit_once(" in ")?.0,
            Self::BirthYear => sentence_after(text, &format!("{title} was born in "))?.rsplit_once(" in ")?.1,
            Self::Employer => sentence_after(text, &format!("{title} worked for "))?,
            Self::Founder => sentence_after(text, &format!("{title} was founded by "))?.rsplit_once(" in ")?.0,
            Self::FoundedYear => sentence_after(text, &format!("{title} was founded by "))?.rsplit_once(" in ")?.1,
            Self::Creator => sentence_after(text, &format!("{title} was directed by "))
                .or_else(|| sentence_after(text, &format!("{title} was written by ")))?,
            Self::WorkYear => sentence_after(text, &format!("{title} is a film released in "))
                .or_else(|| sentence_after(text, &format!("{title} is a novel published in ")))?,
            Self::Country => sentence_after(text, &format!("{title} is a city in "))?,
            Self::Population => {
                sentence_after(text, &format!("{title} has a population of "))?.strip_suffix(" people")?
            }
            Self::Capital => sentence_after(text, &format!("The capital of {title} is "))?,
        };
        Some(value.to_owned())
    }
}

/// The rest of the sentence after `prefix`, where `prefix` starts a word.
fn sentence_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    sentence_from(text, prefix).map(|sentence| sentence[prefix.len()..].trim_end_matches('.'))
}

/// The sentence that starts with `prefix` (at the start of a word), up to and with its full stop.
fn sentence_from<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(rel) = text[from..].find(prefix) {
        let start = from + rel;
        let starts_word = text[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        if starts_word {
            let rest = &text[start + prefix.len()..];
            let end = start + prefix.len() + rest.find('.').map_or(rest.len(), |i| i + 1);
            return Some(&text[start..end]);
        }
        from = start + prefix.len();
    }
    None
}

/// Writes one passage per entity, in passage-id order.
pub fn write_passages(kb: &Kb) -> Vec<Passage> {
    // Reverse relations, so that passages can mention the entities that point at them.
    let mut born_in = vec![Vec::new(); kb.cities.len()];
    let mut staff = vec![Vec::new(); kb.orgs.len()];
    let mut works_by = vec![Vec::new(); kb.people.len()];
    let mut founded_by = vec![Vec::new(); kb.people.len()];
    let mut cities_in = vec![Vec::new(); kb.countries.len()];
    let mut based_in = vec![Vec::new(); kb.cities.len()];
    for (i, p) in kb.people.iter().enumerate() {
        born_in[p.birth_city].push(i);
        staff[p.employer].push(i);
    }
    for (i, w) in kb.works.iter().enumerate() {
        works_by[w.creator].push(i);
    }
    for (i, o) in kb.orgs.iter().enumerate() {
        founded_by[o.founder].push(i);
        based_in[o.headquarters].push(i);
    }
    for (i, c) in kb.cities.iter().enumerate() {
        if kb.countries[c.country].capital != i {
            cities_in[c.country].push(i);
        }
    }

    let mut passages =
        Vec::with_capacity(kb.countries.len() + kb.cities.len() + kb.orgs.len() + kb.people.len() + kb.works.len());
    let mut w = Writer { kb, mentions: Vec::new() };
    for (i, k) in kb.countries.iter().enumerate() {
        let capital = w.name(EntityRef::City(k.capital));
        let neighbour = w.name(EntityRef::Country(k.neighbour));
        let neighbour_capital = w.name(EntityRef::City(kb.countries[k.neighbour].capital));
        let others = w.list(cities_in[i].iter().take(4).map(|&c| EntityRef::City(c)));
        let mut text = format!(
            "{n} is a country. The capital of {n} is {capital}. {n} has a population of {pop} people.",
            n = k.name,
            pop = k.population
        );
        if let Some(others) = others {
            text += &format!("\nOther cities in {} include {others}.", k.name);
        }
        text += &format!("\n{} borders {neighbour}, whose capital is {neighbour_capital}.", k.name);
        passages.push(w.finish(&k.name, text));
    }
    for (i, c) in kb.cities.iter().enumerate() {
        let country = w.name(EntityRef::Country(c.country));
        let mut text = format!(
            "{n} is a city in {country}. {n} has a population of {pop} people. {n} was first settled in {y}.",
            n = c.name,
            pop = c.population,
            y = c.founded
        );
        if let Some(natives) = w.list(born_in[i].iter().take(3).map(|&p| EntityRef::Person(p))) {
            text += &format!("\nNotable people born in {} include {natives}.", c.name);
        }
        if let Some(orgs) = w.list(based_in[i].iter().take(2).map(|&o| EntityRef::Org(o))) {
            text += &format!(" The city is home to the headquarters of {orgs}.");
        }
        let near = &kb.cities[c.nearby];
        let near_name = w.name(EntityRef::City(c.nearby));
        let near_country = w.name(EntityRef::Country(near.country));
        text +=
            &format!("\nThe nearby city of {near_name}, in {near_country}, has about {} inhabitants.", near.population);
        passages.push(w.finish(&c.name, text));
    }
    for (i, o) in kb.orgs.iter().enumerate() {
        let hq = w.name(EntityRef::City(o.headquarters));
        let founder = w.name(EntityRef::Person(o.founder));
        let mut text = format!(
            "{n} is {article} {kind} headquartered in {hq}. {n} was founded by {founder} in {y}.",
            n = o.name,
            article = if o.kind.starts_with(['I', 'O']) { "an" } else { "a" },
            kind = o.kind.to_lowercase(),
            y = o.founded
        );
        let members = staff[i].iter().filter(|&&p| p != o.founder).take(3).map(|&p| EntityRef::Person(p));
        if let Some(members) = w.list(members) {
            text += &format!("\nIts members have included {members}.");
        }
        let rival = &kb.orgs[o.rival];
        let rival_name = w.name(EntityRef::Org(o.rival));
        let rival_founder = w.name(EntityRef::Person(rival.founder));
        text += &format!(
            "\n{} is often compared with {rival_name}, which {rival_founder} established in {}.",
            o.name, rival.founded
        );
        passages.push(w.finish(&o.name, text));
    }
    for (i, p) in kb.people.iter().enumerate() {
        let city = w.name(EntityRef::City(p.birth_city));
        let employer = w.name(EntityRef::Org(p.employer));
        let mut text = format!(
            "{n} was {article} {occ}. {n} was born in {city} in {y}. {n} worked for {employer}.",
            n = p.name,
            article = if p.occupation.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" },
            occ = p.occupation,
            y = p.birth_year
        );
        let mut second = Vec::new();
        if let Some(works) = w.list(works_by[i].iter().take(3).map(|&x| EntityRef::Work(x))) {
            second.push(format!("{} is remembered for {works}.", p.name));
        }
        for &o in founded_by[i].iter().take(2) {
            let org = w.name(EntityRef::Org(o));
            second.push(format!("In {}, {} started {org}.", kb.orgs[o].founded, p.name));
        }
        if !second.is_empty() {
            text += &format!("\n{}", second.join(" "));
        }
        let lived = w.name(EntityRef::City(p.lived_in));
        let twin = &kb.people[p.namesake];
        let twin_name = w.name(EntityRef::Person(p.namesake));
        let twin_city = w.name(EntityRef::City(twin.birth_city));
        text += &format!(
            "\n{} later lived in {lived}. {} is not to be confused with {twin_name}, {} {} from {twin_city} born in {}.",
            p.name,
            p.name,
            if twin.occupation.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" },
            twin.occupation, twin.birth_year
        );
        passages.push(w.finish(&p.name, text));
    }
    for x in &kb.works {
        let creator = w.name(EntityRef::Person(x.creator));
        let (what, verb) = match x.medium {
            Medium::Film => ("film released", "directed"),
            Medium::Novel => ("novel published", "written"),
        };
        let setting = w.name(EntityRef::City(x.setting));
        let other = &kb.works[x.compared];
        let other_name = w.name(EntityRef::Work(x.compared));
        let other_creator = w.name(EntityRef::Person(other.creator));
        let other_medium = match other.medium {
            Medium::Film => "film",
            Medium::Novel => "novel",
        };
        let text = format!(
            "{n} is a {what} in {y}. {n} was {verb} by {creator}.\nThe story is set in {setting}.\nIt is often \
             compared with {other_name}, a {other_medium} by {other_creator} from {oy}.",
            n = x.name,
            y = x.year,
            oy = other.year
        );
        passages.push(w.finish(&x.name, text));
    }
    passages
}

/// Collects the entities a passage mentions while it is written.
struct Writer<'a> {
    kb: &'a Kb,
    mentions: Vec<EntityRef>,
}

impl<'a> Writer<'a> {
    fn name(&mut self, entity: EntityRef) -> &'a str {
        self.mentions.push(entity);
        self.kb.name(entity)
    }

    /// `A`, `A and B`, or `A, B and C`; `None` for no entities.
    fn list(&mut self, entities: impl Iterator<Item = EntityRef>) -> Option<String> {
        let names: Vec<&str> = entities.map(|e| self.name(e)).collect();
        match names.as_slice() {
            [] => None,
            [one] => Some((*one).to_owned()),
            [init @ .., last] => Some(format!("{} and {last}", init.join(", "))),
        }
    }

    fn finish(&mut self, title: &str, text: String) -> Passage {
        let mut mentions = std::mem::take(&mut self.mentions);
        mentions.sort_by_key(|&e| self.kb.passage_id(e));
        mentions.dedup();
        Passage { title: title.to_owned(), text, mentions }
    }
}
