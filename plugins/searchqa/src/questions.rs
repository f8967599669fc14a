//! Questions: single-hop (NQ-like), bridge and comparison (HotpotQA-like), drawn from the knowledge base.
//!
//! Task `index` of a split is drawn from a generator seeded by (split, index), with question types in turn
//! (`index % 3`). Train questions involve only entities outside the test pool (see `Kb::is_test_entity`); test
//! questions' answer entities (for a year, the entity the year belongs to; for a comparison, both entities) lie in
//! the test pool, so no test answer is the answer, subject or hop of any train question.

use serde::{Deserialize, Serialize};

use crate::kb::{EntityRef, Kb, Medium, Rng};
use crate::text::Relation;

/// The splits and their sizes, training split first.
pub const SPLITS: [(&str, u64); 2] = [("train", 10_000), ("test", 1_500)];

/// The three question types of Search-R1's evaluation mix, in the order a split cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuestionType {
    SingleHop,
    Bridge,
    Comparison,
}

impl QuestionType {
    /// Every type, in the order task `index` of a split cycles through them (`index % 3`).
    pub const ALL: [Self; 3] = [Self::SingleHop, Self::Bridge, Self::Comparison];

    /// The name reported by `task_type` (and used in the config's `question_types`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleHop => "single-hop",
            Self::Bridge => "bridge",
            Self::Comparison => "comparison",
        }
    }
}

/// How the question is answered from passages; the expert follows it, reading every fact from a passage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Start at an entity named in the question and follow relations; the last fact read is the answer.
    Chain { start: String, relations: Vec<Relation> },
    /// Read one number about each of two entities named in the question; the smaller (or larger) one wins.
    Compare { names: [String; 2], relation: Relation, smaller_wins: bool },
}

/// One question with its accepted answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub kind: QuestionType,
    /// The question without its final `?`, lower-case first word as in NQ.
    pub text: String,
    pub answers: Vec<String>,
    pub plan: Plan,
    /// The passages that hold the facts the answer needs (not the answer entity's own passage).
    pub gold: Vec<usize>,
}

/// The tasks of a split of `size` questions when only `types` are played: the split's own questions of those
/// types, in their order. `types` must be distinct and in [`QuestionType::ALL`]'s order (the config checks it);
/// with all three, task `index` is the split's question `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The positions in [`QuestionType::ALL`] of the types played, ascending.
    positions: Vec<u64>,
}

impl Selection {
    /// The selection of `types` (distinct, in [`QuestionType::ALL`]'s order).
    pub fn new(types: &[QuestionType]) -> Self {
        let positions = types.iter().map(|t| QuestionType::ALL.iter().position(|a| a == t).unwrap_or(0) as u64);
        Self { positions: positions.collect() }
    }

    /// How many of a split's first `size` questions are of a selected type.
    pub fn size(&self, size: u64) -> u64 {
        self.positions.iter().map(|&p| size / 3 + u64::from(p < size % 3)).sum()
    }

    /// The index, in the whole split, of the selection's task `index`.
    pub fn split_index(&self, index: u64) -> u64 {
        let n = self.positions.len() as u64;
        index / n * 3 + self.positions[(index % n) as usize]
    }
}

/// The question of task `index` of split `split_idx` (an index into [`SPLITS`]).
pub fn question(kb: &Kb, split_idx: usize, index: u64) -> Question {
    let mut rng = Rng::new(crate::kb::splitmix64(index ^ ((split_idx as u64 + 1) << 40)));
    let kind = QuestionType::ALL[(index % 3) as usize];
    let test = split_idx == 1;
    loop {
        let Some(draw) = draw(kb, kind, &mut rng) else { continue };
        let fits = if test {
            draw.answer_entities.iter().all(|&e| kb.is_test_entity(e))
        } else {
            draw.involved.iter().all(|&e| !kb.is_test_entity(e))
        };
        if fits {
            return draw.question;
        }
    }
}

struct Draw {
    question: Question,
    involved: Vec<EntityRef>,
    answer_entities: Vec<EntityRef>,
}

/// Draws one candidate question of `kind`; `None` when the drawn entities do not make a good question.
fn draw(kb: &Kb, kind: QuestionType, rng: &mut Rng) -> Option<Draw> {
    use EntityRef::{City, Country, Org, Person, Work};
    use Relation::*;
    let person = |rng: &mut Rng| rng.below(kb.people.len() as u64) as usize;
    let org = |rng: &mut Rng| rng.below(kb.orgs.len() as u64) as usize;
    let work = |rng: &mut Rng| rng.below(kb.works.len() as u64) as usize;
    let city = |rng: &mut Rng| rng.below(kb.cities.len() as u64) as usize;
    let name = |e: EntityRef| kb.name(e).to_owned();
    let made_by = |w: usize| match kb.works[w].medium {
        Medium::Film => ("directed", "director"),
        Medium::Novel => ("wrote", "author"),
    };
    // Each arm: question text, relations from the start entity, the chain of entities, and the answer entity.
    let (text, relations, chain, answer_entity): (String, Vec<Relation>, Vec<EntityRef>, EntityRef) = match kind {
        QuestionType::SingleHop => match rng.below(7) {
            0 => {
                let p = person(rng);
                let c = City(kb.people[p].birth_city);
                (format!("in which city was {} born", name(Person(p))), vec![BirthCity], vec![Person(p), c], c)
            }
            1 => {
                let o = org(rng);
                let f = Person(kb.orgs[o].founder);
                (format!("who founded {}", name(Org(o))), vec![Founder], vec![Org(o), f], f)
            }
            2 => {
                let w = work(rng);
                let c = Person(kb.works[w].creator);
                (format!("who {} {}", made_by(w).0, name(Work(w))), vec![Creator], vec![Work(w), c], c)
            }
            3 => {
                let k = rng.below(kb.countries.len() as u64) as usize;
                let c = City(kb.countries[k].capital);
                (format!("what is the capital of {}", name(Country(k))), vec![Capital], vec![Country(k), c], c)
            }
            4 => {
                let c = city(rng);
                let k = Country(kb.cities[c].country);
                (format!("in which country is {}", name(City(c))), vec![Relation::Country], vec![City(c), k], k)
            }
            5 => {
                let o = org(rng);
                (format!("in which year was {} founded", name(Org(o))), vec![FoundedYear], vec![Org(o)], Org(o))
            }
            _ => {
                let p = person(rng);
                let o = Org(kb.people[p].employer);
                (format!("which organisation did {} work for", name(Person(p))), vec![Employer], vec![Person(p), o], o)
            }
        },
        QuestionType::Bridge => match rng.below(5) {
            0 => {
                let o = org(rng);
                let f = kb.orgs[o].founder;
                let c = City(kb.people[f].birth_city);
                let text = format!("in which city was the founder of {} born", name(Org(o)));
                (text, vec![Founder, BirthCity], vec![Org(o), Person(f), c], c)
            }
            1 => {
                let w = work(rng);
                let p = kb.works[w].creator;
                let c = City(kb.people[p].birth_city);
                let text = format!("in which city was the {} of {} born", made_by(w).1, name(Work(w)));
                (text, vec![Creator, BirthCity], vec![Work(w), Person(p), c], c)
            }
            2 => {
                let p = person(rng);
                let c = kb.people[p].birth_city;
                let k = Country(kb.cities[c].country);
                let text = format!("in which country was {} born", name(Person(p)));
                (text, vec![BirthCity, Relation::Country], vec![Person(p), City(c), k], k)
            }
            3 => {
                let p = person(rng);
                let o = kb.people[p].employer;
                let f = kb.orgs[o].founder;
                if f == p {
                    return None;
                }
                let text = format!("who founded the organisation that {} worked for", name(Person(p)));
                (text, vec![Employer, Founder], vec![Person(p), Org(o), Person(f)], Person(f))
            }
            _ => {
                let p = person(rng);
                let o = kb.people[p].employer;
                let text = format!("in which year was the organisation that {} worked for founded", name(Person(p)));
                (text, vec![Employer, FoundedYear], vec![Person(p), Org(o)], Org(o))
            }
        },
        QuestionType::Comparison => {
            let (template, relation, smaller_wins, a, b, va, vb) = match rng.below(4) {
                0 => {
                    let (a, b) = (person(rng), person(rng));
                    let (va, vb) = (kb.people[a].birth_year, kb.people[b].birth_year);
                    ("who was born earlier", BirthYear, true, Person(a), Person(b), va, vb)
                }
                1 => {
                    let (a, b) = (city(rng), city(rng));
                    let (va, vb) = (kb.cities[a].population, kb.cities[b].population);
                    ("which city has a larger population", Population, false, City(a), City(b), va, vb)
                }
                2 => {
                    let (a, b) = (org(rng), org(rng));
                    let (va, vb) = (kb.orgs[a].founded, kb.orgs[b].founded);
                    ("which organisation was founded earlier", FoundedYear, true, Org(a), Org(b), va, vb)
                }
                _ => {
                    let (a, b) = (work(rng), work(rng));
                    let (va, vb) = (kb.works[a].year, kb.works[b].year);
                    ("which work came out earlier", WorkYear, true, Work(a), Work(b), va, vb)
                }
            };
            if va == vb {
                return None;
            }
            let winner = if (va < vb) == smaller_wins { a } else { b };
            let question = Question {
                kind,
                text: format!("{template}, {} or {}", name(a), name(b)),
                answers: vec![name(winner)],
                plan: Plan::Compare { names: [name(a), name(b)], relation, smaller_wins },
                gold: vec![kb.passage_id(a), kb.passage_id(b)],
            };
            return Some(Draw { question, involved: vec![a, b], answer_entities: vec![a, b] });
        }
    };
    let answer = match relations.last() {
        Some(FoundedYear) => match answer_entity {
            Org(o) => kb.orgs[o].founded.to_string(),
            _ => return None,
        },
        _ => name(answer_entity),
    };
    // The gold passages are those the chain reads facts from: every entity but a final named answer.
    let n_read = relations.len();
    let gold = chain.iter().take(n_read).map(|&e| kb.passage_id(e)).collect();
    let question =
        Question { kind, text, answers: vec![answer], plan: Plan::Chain { start: name(chain[0]), relations }, gold };
    Some(Draw { question, involved: chain, answer_entities: vec![answer_entity] })
}
