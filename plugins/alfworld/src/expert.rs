//! The expert, after ALFWorld's handcoded expert: a fixed list of subgoals per task type (find the object, take
//! it, treat it at the appliance, find the target receptacle, put it there; find and switch on the lamp for the
//! light task). To find something it visits, in order, the receptacles that can hold it and that it has not seen
//! inside yet (surfaces first, then closed receptacles, which it opens). It reads the world only through what
//! the agent has seen, recorded in `seen`.

use crate::actions::{self, Command};
use crate::reward::{satisfied, treated};
use crate::tables;
use crate::world::{Place, TaskType, World};

/// The expert's next command and a short thought naming the current subgoal.
pub fn next(world: &World, seen: &[bool]) -> (String, Command) {
    let goal = &world.goal;
    let obj = goal.object.to_lowercase();
    let target = placement_target(world);
    let r_name = |r: usize| world.receptacles[r].name.clone();
    if let Some(h) = world.held() {
        let held = &world.objects[h];
        if held.kind != goal.object {
            return put_down(world, h);
        }
        if goal.task_type == TaskType::LookAtObjInLight {
            let lamp_type = goal.target.to_lowercase();
            let known = world.objects.iter().enumerate().find_map(|(i, o)| match o.place {
                Place::In(r) if o.kind == goal.target && seen.get(r) == Some(&true) => Some((i, r)),
                _ => None,
            });
            return match known {
                Some((lamp, r)) if world.at == Some(r) => (
                    format!("I hold the {}; now I turn on the {}.", held.name, world.objects[lamp].name),
                    Command::Use(lamp),
                ),
                Some((lamp, r)) => (
                    format!("I hold the {}; the {} is at {}.", held.name, world.objects[lamp].name, r_name(r)),
                    Command::GoTo(r),
                ),
                None => explore(world, seen, goal.target, &format!("find {}", with_article(&lamp_type))),
            };
        }
        let appliance = |kind: &str| world.receptacles.iter().position(|r| r.kind == kind);
        return treat_and_place(world, h, appliance, target);
    }
    // Hands are empty: fetch a goal object that is not yet where it belongs.
    let wanted = |o: usize| {
        let object = &world.objects[o];
        object.kind == goal.object && object.pickable && !matches!(object.place, Place::In(r) if Some(r) == target)
    };
    let known = (0..world.objects.len())
        .filter(|&o| wanted(o))
        .filter_map(|o| match world.objects[o].place {
            Place::In(r) if seen.get(r) == Some(&true) => Some((o, r)),
            _ => None,
        })
        .min_by_key(|&(_, r)| world.at != Some(r));
    match known {
        Some((o, r)) if world.at == Some(r) && !world.receptacles[r].open => (
            format!("Subgoal: take the {}. The {} is closed, so I open it.", world.objects[o].name, r_name(r)),
            Command::Open(r),
        ),
        Some((o, r)) if world.at == Some(r) => {
            (format!("Subgoal: take the {} from {}.", world.objects[o].name, r_name(r)), Command::Take(o, r))
        }
        Some((o, r)) => {
            (format!("Subgoal: take the {}. It is in {}.", world.objects[o].name, r_name(r)), Command::GoTo(r))
        }
        None => explore(world, seen, goal.object, &format!("find {}", with_article(&obj))),
    }
}

/// With the goal object `h` in hand: heat, clean or cool it at the appliance `appliance` picks (by type) when the
/// task asks and it is not yet done, then put it in `target`, opening it first if it is closed.
fn treat_and_place(
    world: &World,
    h: usize,
    appliance: impl Fn(&str) -> Option<usize>,
    target: Option<usize>,
) -> (String, Command) {
    let held = &world.objects[h];
    let r_name = |r: usize| world.receptacles[r].name.clone();
    if let Some(treatment) = world.goal.task_type.treatment() {
        if !treated(held, Some(treatment)) {
            let Some(a) = appliance(treatment.appliance()) else { return look() };
            let subgoal = format!("{} the {} with {}", treatment.verb(), held.name, r_name(a));
            return if world.at == Some(a) {
                (format!("Subgoal: {subgoal}."), Command::Treat(treatment, h, a))
            } else {
                (format!("Subgoal: {subgoal}. I go to {} first.", r_name(a)), Command::GoTo(a))
            };
        }
    }
    let Some(t) = target else { return look() };
    let subgoal = format!("put the {} in {}", held.name, r_name(t));
    if world.at != Some(t) {
        (format!("Subgoal: {subgoal}. I go there."), Command::GoTo(t))
    } else if !world.receptacles[t].open {
        (format!("Subgoal: {subgoal}. It is closed, so I open it."), Command::Open(t))
    } else {
        (format!("Subgoal: {subgoal}."), Command::Move(h, t))
    }
}

/// Whether the expert solves `world` from its current state within `max_steps` commands.
pub fn solves(world: &World, max_steps: u32) -> bool {
    plan(world, max_steps).1
}

/// The expert's commands from `world`'s current state until the task is solved (at most `max_steps`), and
/// whether it was.
pub fn plan(world: &World, max_steps: u32) -> (Vec<Command>, bool) {
    let mut world = world.clone();
    let mut seen = vec![false; world.receptacles.len()];
    let mut commands = Vec::new();
    for _ in 0..max_steps {
        let (_, command) = next(&world, &seen);
        commands.push(command);
        actions::apply(&mut world, command);
        note_seen(&world, &mut seen);
        if satisfied(&world) {
            return (commands, true);
        }
    }
    (commands, false)
}

/// Records that the agent has seen inside the receptacle it stands at, if it is open.
pub fn note_seen(world: &World, seen: &mut [bool]) {
    if let Some(r) = world.at {
        if world.receptacles[r].open {
            if let Some(flag) = seen.get_mut(r) {
                *flag = true;
            }
        }
    }
}

/// The receptacle instance the expert puts goal objects in: the goal type's instance that already holds the most
/// goal objects (so that a second object joins the first), the first one on a tie.
fn placement_target(world: &World) -> Option<usize> {
    let goal = &world.goal;
    (0..world.receptacles.len()).filter(|&r| world.receptacles[r].kind == goal.target).max_by_key(|&r| {
        let count = world.contents(r).filter(|&o| world.objects[o].kind == goal.object).count();
        (count, std::cmp::Reverse(r))
    })
}

/// Whether receptacle `r` is worth searching for `kind`: a lamp stand for a lamp, else a receptacle that can
/// hold the type and is not of the goal's target type.
fn searchable(world: &World, r: usize, kind: &str) -> bool {
    let recep = world.receptacles[r].kind;
    if kind.ends_with("Lamp") {
        tables::LAMP_STANDS.contains(&recep)
    } else {
        tables::holds(recep, kind) && recep != world.goal.target
    }
}

/// The next receptacle to search for `kind`: unseen ones that can hold it, surfaces before closed ones.
fn explore(world: &World, seen: &[bool], kind: &str, subgoal: &str) -> (String, Command) {
    let can_hold = |r: usize| searchable(world, r, kind);
    let unseen = (0..world.receptacles.len()).filter(|&r| seen.get(r) != Some(&true) && can_hold(r));
    let next = unseen.min_by_key(|&r| (world.receptacles[r].openable, r));
    let Some(r) = next else { return look() };
    let name = &world.receptacles[r].name;
    if world.at == Some(r) && !world.receptacles[r].open {
        (format!("Subgoal: {subgoal}. The {name} is closed, so I open it."), Command::Open(r))
    } else if world.at == Some(r) {
        (format!("Subgoal: {subgoal}. I look at {name}."), Command::ExamineReceptacle(r))
    } else {
        (format!("Subgoal: {subgoal}. I have not checked {name} yet."), Command::GoTo(r))
    }
}

/// Puts down an object that the goal does not need, where the agent stands if possible.
fn put_down(world: &World, h: usize) -> (String, Command) {
    let name = &world.objects[h].name;
    let fits = |r: usize| tables::holds(world.receptacles[r].kind, world.objects[h].kind);
    let thought = format!("The {name} is not what I need, so I put it down first.");
    match world.at {
        Some(r) if fits(r) && world.receptacles[r].open => (thought, Command::Move(h, r)),
        Some(r) if fits(r) => (thought, Command::Open(r)),
        _ => match (0..world.receptacles.len()).find(|&r| fits(r)) {
            Some(r) => (thought, Command::GoTo(r)),
            None => look(),
        },
    }
}

/// The fallback when no subgoal applies (never reached on generated tasks).
fn look() -> (String, Command) {
    ("I look around to get my bearings.".into(), Command::Look)
}

/// "a mug", "an apple": the thoughts are ours, so they use English articles (ALFWorld's lists always say "a").
fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {noun}")
}

/// The expert of `expert = "visible"`: the same subgoals as [`next`], decided only from what a prompt with the
/// compact action history shows, so that a model can learn to imitate it.
///
/// What it reads, and where a prompt shows it: the goal (the task text); the receptacle the agent stands at, its
/// openness and, when it is open, its contents (the current observation, which after `take`, `use` or a
/// treatment no longer lists them, while the admissible list still offers `take` and `use` on what is there);
/// the held object (the admissible list offers `move`, `heat`, ... only with something in hand); the receptacles
/// and appliances of the room (the admissible `go to` list); and `searched`, the receptacles stood at and seen
/// open since the last object was taken or put (the action history since the last `take` or `move`).
///
/// It searches the receptacles that can hold what it looks for, surfaces first and then those that open (which a
/// receptacle's type tells), each in the order the admissible list names them, skipping those in `searched`, and
/// restarts that search after every `take` and `move`: it never acts on where it saw something earlier. The target receptacle is the first of the goal's type by name.
pub fn next_visible(world: &World, searched: &[bool]) -> (String, Command) {
    decide_visibly(world, Search::Visible(searched))
}

/// The expert of `expert = "sweep"`: [`next_visible`]'s subgoals with a search that needs no memory at all. It
/// goes round the receptacles that can hold what it looks for, in the order the admissible list names them (by
/// name), from the one after where it stands (the current observation names it). While it looks for something,
/// its thought first names that thing and then what it finds here (`Looking for a cup: cup 1 is here, so I take
/// it.`, `Looking for a cup: none here. Next after cabinet 1: countertop 1.`), so that the decision follows a
/// name the model has just written, which it can look up in the observation.
pub fn next_sweep(world: &World) -> (String, Command) {
    decide_visibly(world, Search::Sweep)
}

/// The expert of `expert = "roster"`: [`next_sweep`]'s decisions, command for command, with thoughts that turn
/// each of its lookups into a copy. While it searches, a thought first writes the roster, the receptacles it goes
/// round (and the one it stands at), in order (`Looking for a cup in: countertop 1, countertop 2, fridge 1.`);
/// then, at a receptacle worth searching, what it shows (`Here: bowl 2, cup 1.`, copied from the observation);
/// then the decision (`cup 1, so I take it.`, or `No cup. After countertop 2: fridge 1.`). The receptacle after
/// this one is the name that follows it in the roster just written, which an induction head copies, where the
/// sweep's `Next after countertop 2:` asks the model to place a name among the admissible list's by their order.
/// Every thought starts by restating the task (`Task: put a cool potato in garbagecan.`), so that the words a
/// decision depends on (cool or heat, one object or two) sit just before it rather than at the prompt's top.
pub fn next_roster(world: &World) -> (String, Command) {
    let (thought, command) = decide_visibly(world, Search::Roster);
    (format!("Task: {}. {thought}", world.goal.text), command)
}

/// How a visible expert searches, and so how it words what it finds.
#[derive(Clone, Copy)]
enum Search<'a> {
    /// [`next_visible`]: skips the receptacles searched since the last take or move; thoughts name the subgoal.
    Visible(&'a [bool]),
    /// [`next_sweep`]: goes round by name from where it stands; thoughts name the thing sought first.
    Sweep,
    /// [`next_roster`]: the sweep's decisions; thoughts write the roster and what is here before deciding.
    Roster,
}

impl Search<'_> {
    /// The next step of the search for `kind`.
    fn next(self, world: &World, kind: &str) -> (String, Command) {
        match self {
            Self::Visible(searched) => {
                search(world, searched, kind, &format!("find {}", with_article(&kind.to_lowercase())))
            }
            Self::Sweep | Self::Roster => sweep(world, kind, self),
        }
    }

    /// The thought of taking `o` from `r`, a goal object seen there.
    fn take(self, world: &World, o: usize, r: usize) -> String {
        let name = &world.objects[o].name;
        match self {
            Self::Visible(_) => format!("Subgoal: take the {name} from {}.", world.receptacles[r].name),
            Self::Sweep => format!("{}: {name} is here, so I take it.", looking(world.goal.object)),
            Self::Roster => format!("{} {name}, so I take it.", roster_and_here(world, world.goal.object)),
        }
    }

    /// The thought of turning on `lamp`, seen here, while holding `held`.
    fn use_lamp(self, world: &World, held: usize, lamp: usize) -> String {
        let name = &world.objects[lamp].name;
        match self {
            Self::Visible(_) => format!("I hold the {}; now I turn on the {name}.", world.objects[held].name),
            Self::Sweep => format!("{}: {name} is here, so I turn it on.", looking(world.goal.target)),
            Self::Roster => format!("{} {name}, so I turn it on.", roster_and_here(world, world.goal.target)),
        }
    }
}

/// "Looking for a cup": how the sweep's thoughts begin while it looks for `kind`.
fn looking(kind: &str) -> String {
    format!("Looking for {}", with_article(&kind.to_lowercase()))
}

/// The receptacles the sweep for `kind` goes round, and the one the agent stands at, by name.
fn roster(world: &World, kind: &str) -> Vec<usize> {
    let mut names: Vec<usize> =
        (0..world.receptacles.len()).filter(|&r| searchable(world, r, kind) || world.at == Some(r)).collect();
    names.sort_by(|&a, &b| world.receptacles[a].name.cmp(&world.receptacles[b].name));
    names
}

/// How the roster expert's search thoughts begin: "Looking for a cup in: countertop 1, fridge 1." and, when it
/// stands at an open receptacle worth searching, what that shows as the observation lists it ("Here: bowl 2, cup
/// 1." or "Here: nothing.").
fn roster_and_here(world: &World, kind: &str) -> String {
    let names: Vec<&str> = roster(world, kind).into_iter().map(|r| world.receptacles[r].name.as_str()).collect();
    let mut thought = format!("{} in: {}.", looking(kind), names.join(", "));
    if let Some(r) = world.at.filter(|&r| world.receptacles[r].open && searchable(world, r, kind)) {
        let here: Vec<&str> =
            crate::text::in_listing_order(world.contents(r).map(|o| world.objects[o].name.as_str())).collect();
        let here = if here.is_empty() { "nothing".to_string() } else { here.join(", ") };
        thought.push_str(&format!(" Here: {here}."));
    }
    thought
}

/// The subgoals of the visible experts, with `search` deciding where to look next and how thoughts are worded.
fn decide_visibly(world: &World, search: Search) -> (String, Command) {
    let goal = &world.goal;
    let here_open = world.at.filter(|&r| world.receptacles[r].open);
    let visible_here =
        |kind: &str| here_open.and_then(|r| world.contents(r).find(|&o| world.objects[o].kind == kind).map(|o| (o, r)));
    let target = first_by_name(world, |r| world.receptacles[r].kind == goal.target);
    if let Some(h) = world.held() {
        let held = &world.objects[h];
        if held.kind != goal.object {
            return put_down(world, h);
        }
        if goal.task_type == TaskType::LookAtObjInLight {
            let lamp_here = here_open.and_then(|r| {
                world.contents(r).find(|&o| world.objects[o].kind == goal.target && world.objects[o].is_lamp())
            });
            return match lamp_here {
                Some(lamp) => (search.use_lamp(world, h, lamp), Command::Use(lamp)),
                None => search.next(world, goal.target),
            };
        }
        let appliance = |kind: &str| first_by_name(world, |r| world.receptacles[r].kind == kind);
        return treat_and_place(world, h, appliance, target);
    }
    // Hands are empty: take a goal object seen here, unless here is the target, else search on.
    match visible_here(goal.object) {
        Some((o, r)) if Some(r) != target && world.objects[o].pickable => {
            (search.take(world, o, r), Command::Take(o, r))
        }
        _ => search.next(world, goal.object),
    }
}

/// The receptacle that comes first by name among those `keep` accepts (the order of the admissible `go to` list).
fn first_by_name(world: &World, keep: impl Fn(usize) -> bool) -> Option<usize> {
    (0..world.receptacles.len())
        .filter(|&r| keep(r))
        .min_by(|&a, &b| world.receptacles[a].name.cmp(&world.receptacles[b].name))
}

/// The next step of the visible search for `kind`: open the receptacle here if it is a closed candidate, else go
/// to the first candidate by name not yet searched.
fn search(world: &World, searched: &[bool], kind: &str, subgoal: &str) -> (String, Command) {
    let can_hold = |r: usize| searchable(world, r, kind);
    if let Some(r) = world.at {
        if can_hold(r) && !world.receptacles[r].open {
            let name = &world.receptacles[r].name;
            return (format!("Subgoal: {subgoal}. The {name} is closed, so I open it."), Command::Open(r));
        }
    }
    // Surfaces before receptacles that open (a type's openness is the same in every room), each by name.
    let next = (0..world.receptacles.len())
        .filter(|&r| can_hold(r) && searched.get(r) != Some(&true) && world.at != Some(r))
        .min_by(|&a, &b| {
            let key = |r: usize| (world.receptacles[r].openable, &world.receptacles[r].name);
            key(a).cmp(&key(b))
        });
    match next {
        Some(r) => {
            let name = &world.receptacles[r].name;
            (format!("Subgoal: {subgoal}. Next to check: {name}."), Command::GoTo(r))
        }
        None => look(),
    }
}

/// The next step of the sweep for `kind`, whose thoughts start with `looking`: open the receptacle here if it is
/// a closed candidate, else go to the candidate that follows the one here by name (the admissible list's order),
/// round to the first after the last; the first candidate when the agent stands at none.
fn sweep(world: &World, kind: &str, style: Search) -> (String, Command) {
    let roster = matches!(style, Search::Roster);
    let looking = &looking(kind);
    let can_hold = |r: usize| searchable(world, r, kind);
    if let Some(r) = world.at {
        if can_hold(r) && !world.receptacles[r].open {
            let name = &world.receptacles[r].name;
            let thought = if roster {
                format!("{} {name} is closed, so I open it.", roster_and_here(world, kind))
            } else {
                format!("{looking}: {name} is closed, so I open it.")
            };
            return (thought, Command::Open(r));
        }
    }
    let name = |r: usize| world.receptacles[r].name.as_str();
    let mut candidates: Vec<usize> =
        (0..world.receptacles.len()).filter(|&r| can_hold(r) && world.at != Some(r)).collect();
    candidates.sort_by(|&a, &b| name(a).cmp(name(b)));
    let here = world.at.map(name);
    let after_here = here.and_then(|h| candidates.iter().copied().find(|&r| name(r) > h));
    let next = after_here.or(candidates.first().copied());
    if roster {
        let start = roster_and_here(world, kind);
        let none = match world.at {
            Some(r) if can_hold(r) => format!(" No {}.", kind.to_lowercase()),
            _ => String::new(),
        };
        return match (next, here) {
            (Some(r), Some(h)) => (format!("{start}{none} After {h}: {}.", name(r)), Command::GoTo(r)),
            (Some(r), None) => (format!("{start} First: {}.", name(r)), Command::GoTo(r)),
            (None, _) => look(),
        };
    }
    match (next, here) {
        (Some(r), Some(h)) => (format!("{looking}: none here. Next after {h}: {}.", name(r)), Command::GoTo(r)),
        (Some(r), None) => (format!("{looking}. First: {}.", name(r)), Command::GoTo(r)),
        (None, _) => look(),
    }
}
