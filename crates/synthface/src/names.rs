//! Person names: unique per person, and for identities shared between training and test sets,
//! spelt differently in the two (accents, case, separators), as real datasets do.

/// How a name is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `First_Last`, ASCII: LFW/YTF/FaceScrub folder style.
    Plain,
    /// The CASIA names-file spelling of a shared identity: accents, other case, hyphen.
    Training,
}

const FIRST: [&str; 32] = [
    "Ana", "Jose", "Maria", "Luis", "Elena", "Omar", "Nadia", "Pavel", "Irene", "Tomas", "Lucia", "Andre", "Sofia", "Hugo", "Ines",
    "Marco", "Noemi", "Felix", "Rosa", "Ivan", "Clara", "Dario", "Eva", "Jonas", "Lena", "Mateo", "Olga", "Ramon", "Sara", "Tariq", "Vera",
    "Zoe",
];
const SYL: [&str; 30] = [
    "ba", "ce", "di", "fo", "ga", "he", "ji", "ko", "la", "me", "ni", "po", "ra", "se", "ti", "vo", "za", "bre", "cla", "dro", "fle",
    "gri", "kra", "lio", "mar", "nor", "pel", "ros", "tan", "vel",
];
const BASE: u64 = 30 * 30 * 30 * 30;

/// The name of person `pid` in corpus `seed`. Distinct persons (pid < 810,000) get distinct
/// plain names: the last name encodes the pid through a bijection of 0..30⁴.
pub fn name_for(seed: u64, pid: u64, spelling: Spelling) -> String {
    let offset = seed.wrapping_mul(0x9E37_79B9) % BASE;
    let mut code = (pid.wrapping_mul(16_807) + offset) % BASE; // 16807 = 7^5 is coprime to 30
    let mut last = String::new();
    for _ in 0..4 {
        last.push_str(SYL[(code % 30) as usize]);
        code /= 30;
    }
    let mut last: Vec<char> = last.chars().collect();
    last[0] = last[0].to_ascii_uppercase();
    let last: String = last.into_iter().collect();
    let first = FIRST[((pid ^ seed).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 59) as usize];
    match spelling {
        Spelling::Plain => format!("{first}_{last}"),
        Spelling::Training => {
            let accent = |s: &str| s.replacen('e', "é", 1).replacen('o', "ö", 1).replacen('a', "á", 1);
            if pid.is_multiple_of(2) {
                format!("{}-{}", accent(first), accent(&last).to_uppercase())
            } else {
                format!("{}_{}", accent(first).to_lowercase(), accent(&last))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_unique_and_ascii() {
        let mut seen = std::collections::HashSet::new();
        for pid in 0..50_000 {
            let n = name_for(7, pid, Spelling::Plain);
            assert!(n.is_ascii() && n.contains('_') && !n.contains(' '));
            let last = n.split('_').nth(1).unwrap().to_owned();
            assert!(seen.insert(last), "duplicate last name for pid {pid}");
        }
    }

    #[test]
    fn training_spelling_differs_but_folds_to_the_same_letters() {
        for pid in [1, 2, 3, 10] {
            let (p, t) = (name_for(3, pid, Spelling::Plain), name_for(3, pid, Spelling::Training));
            assert_ne!(p, t);
            let fold = |s: &str| -> String {
                s.chars()
                    .map(|c| match c {
                        'é' | 'É' => 'e',
                        'ö' | 'Ö' => 'o',
                        'á' | 'Á' => 'a',
                        '-' => '_',
                        c => c.to_ascii_lowercase(),
                    })
                    .collect()
            };
            assert_eq!(fold(&p), fold(&t), "{p} vs {t}");
        }
    }
}
