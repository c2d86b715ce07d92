//! `meridian-chaos`: the runner (scenarios, nemesis, clients) comes next.

fn main() {
    eprintln!("meridian-chaos: the runner is not written yet; see chaos/README.md");
    std::process::exit(2);
}
