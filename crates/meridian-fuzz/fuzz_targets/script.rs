//! A fuzz input read as a script: one byte per choice, 0 once it runs out.
//! Each target adds the choices it makes (`impl Script<'_>` in its file).

pub struct Script<'a>(pub std::slice::Iter<'a, u8>);

impl Script<'_> {
    pub fn next(&mut self) -> Option<u8> {
        self.0.next().copied()
    }

    pub fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}
