use super::*;

const SMALL: &str = include_str!("../../scenarios/small.toml");

fn err(text: &str) -> (usize, String) {
    match Scenario::parse("t.toml", text) {
        Err(Error::Scenario {
            line, msg, file, ..
        }) => {
            assert_eq!(file, "t.toml");
            (line, msg)
        }
        other => panic!("expected a scenario error, got {other:?}"),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

#[test]
fn shipped_scenarios_parse() {
    for f in ["small.toml", "social.toml", "social36.toml"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(f);
        let sc = Scenario::load(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(sc.front_end().is_some());
    }
}

#[test]
fn unknown_field_is_located() {
    let t = SMALL.replace("work_us = 100", "wrok_us = 100");
    let (line, msg) = err(&t);
    assert_eq!(line, line_of(&t, "wrok_us"), "{msg}");
    assert!(msg.contains("wrok_us"), "{msg}");
}

#[test]
fn syntax_error_is_located() {
    let t = SMALL.replace("rps = 150", "rps = = 150");
    let (line, _) = err(&t);
    assert_eq!(line, line_of(&t, "rps = = 150"));
}

#[test]
fn unknown_callee_is_located() {
    let t = SMALL.replace("calls = [\"post-store\"]", "calls = [\"nope\"]");
    let (line, msg) = err(&t);
    assert_eq!(line, line_of(&t, "\"nope\""));
    assert!(msg.contains("unknown service \"nope\""), "{msg}");
}

#[test]
fn cycle_is_rejected() {
    let t = SMALL.replace("calls = [\"post-store\"]", "calls = [\"home\"]");
    let (_, msg) = err(&t);
    assert!(msg.contains("cycle"), "{msg}");
}

#[test]
fn fault_checks() {
    let f = "\n[[fault]]\nkind = \"cpu_quota\"\nservice = \"ghost\"\nstart_s = 1\nduration_s = 2\nintensity = 0.1\n";
    let t = format!("{SMALL}{f}");
    let (line, msg) = err(&t);
    assert_eq!(line, line_of(&t, "ghost"), "{msg}");
    let f = "\n[[fault]]\nkind = \"cpu_quota\"\nservice = \"home\"\nstart_s = 1\nduration_s = 2\nintensity = 0.1\nonset = \"ramp\"\nramp_s = 9\n";
    let (_, msg) = err(&format!("{SMALL}{f}"));
    assert!(msg.contains("ramp_s"), "{msg}");
    let f = "\n[[fault]]\nkind = \"blocking\"\nservice = \"post-cache\"\nstart_s = 1\nduration_s = 2\nintensity = 100\n";
    let (_, msg) = err(&format!("{SMALL}{f}"));
    assert!(msg.contains("rpc"), "{msg}");
    let f = "\n[[fault]]\nkind = \"load_spike\"\nstart_s = 1\nduration_s = 2\nintensity = 2\nonset = \"bursts\"\nburst_on_s = 0.5\nburst_period_s = 2\n";
    Scenario::parse("t.toml", &format!("{SMALL}{f}")).expect("load spike without service");
}

#[test]
fn random_faults_start_inside_the_run_and_repeat_with_the_seed() {
    let f = "\n[[fault]]\nkind = \"cpu_quota\"\nservice = \"timeline\"\nstart_s = 2\nduration_s = 3\nintensity = 0.02\nrandom = true\n";
    let sc = Scenario::parse("t.toml", &format!("{SMALL}{f}")).expect("random fault");
    let starts: Vec<f64> = (0..2)
        .map(|_| {
            sc.with_random_starts(20.0)
                .faults
                .last()
                .expect("fault")
                .start_s
        })
        .collect();
    assert!((2.0..=17.0).contains(&starts[0]), "{starts:?}");
    assert_eq!(starts[0], starts[1], "same seed, same schedule");
    let mut other = sc.clone();
    other.seed += 1;
    let s2 = other
        .with_random_starts(20.0)
        .faults
        .last()
        .expect("fault")
        .start_s;
    assert_ne!(starts[0], s2, "another seed, another start");
    // A run shorter than the fault keeps start_s.
    assert_eq!(
        sc.with_random_starts(1.0)
            .faults
            .last()
            .expect("fault")
            .start_s,
        2.0
    );
    let f = "\n[[fault]]\nkind = \"net_bw\"\nservice = \"timeline\"\nstart_s = 2\nduration_s = 3\nintensity = 1\nrandom = true\n";
    let (_, msg) = err(&format!("{SMALL}{f}"));
    assert!(msg.contains("cannot be random"), "{msg}");
}

#[test]
fn needs_one_front_end() {
    let t = SMALL.replace("kind = \"nginx\"", "kind = \"rpc\"");
    let (_, msg) = err(&t);
    assert!(msg.contains("exactly one nginx"), "{msg}");
}
