//! Numbers in words and in Roman numerals, one table and one rule for both sides: the
//! query side reads spelled numbers and numerals as digits ([`super::text`]), the
//! catalog side spells digits and numerals as they are said ([`super::spoken`]).

/// The words of 0 to 19.
const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
/// The words of the tens from 20 (the first two are unused).
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// The value of a unit word (0 to 19; "oh" is 0 too).
pub fn unit(word: &str) -> Option<u64> {
    if word == "oh" {
        return Some(0);
    }
    UNITS.iter().position(|&u| u == word).map(|v| v as u64)
}

/// The value of a tens word ("twenty" to "ninety").
pub fn tens(word: &str) -> Option<u64> {
    TENS.iter()
        .skip(2)
        .position(|&t| t == word)
        .map(|v| (v as u64 + 2) * 10)
}

/// A number below 100, or a year-like number below 10,000, in words.
pub fn number_words(n: u64) -> Option<String> {
    let below_100 = |n: u64| -> String {
        match n {
            0..=19 => UNITS[n as usize].to_string(),
            _ if n.is_multiple_of(10) => TENS[(n / 10) as usize].to_string(),
            _ => format!("{} {}", TENS[(n / 10) as usize], UNITS[(n % 10) as usize]),
        }
    };
    match n {
        0..=99 => Some(below_100(n)),
        // Years are said in pairs: 1984 -> "nineteen eighty four".
        1100..=9999 if !n.is_multiple_of(100) => {
            Some(format!("{} {}", below_100(n / 100), below_100(n % 100)))
        }
        _ => None,
    }
}

/// The value of a Roman numeral of I, V and X (1 to 39), in either case; `None` for
/// anything else, a non-canonical spelling ("iix", "vv") included.
pub fn roman_value(word: &str) -> Option<u64> {
    let lower = word.to_lowercase();
    if lower.is_empty() || !lower.chars().all(|c| matches!(c, 'i' | 'v' | 'x')) {
        return None;
    }
    let value = |c| match c {
        'i' => 1i64,
        'v' => 5,
        _ => 10,
    };
    let digits: Vec<i64> = lower.chars().map(value).collect();
    let total: i64 = digits
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if digits.get(i + 1).is_some_and(|&n| n > v) {
                -v
            } else {
                v
            }
        })
        .sum();
    let total = u64::try_from(total).ok().filter(|&t| t > 0)?;
    (to_roman(total) == lower).then_some(total)
}

fn to_roman(mut n: u64) -> String {
    let mut out = String::new();
    for (value, digits) in [(10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")] {
        while n >= value {
            out.push_str(digits);
            n -= value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_numerals_read_both_ways() {
        for n in 0..100 {
            let words = number_words(n).unwrap();
            let parts: Vec<&str> = words.split(' ').collect();
            let read = match parts[..] {
                [one] => unit(one).or_else(|| tens(one)),
                [t, u] => Some(tens(t).unwrap() + unit(u).unwrap()),
                _ => None,
            };
            assert_eq!(read, Some(n), "{words}");
        }
        assert_eq!(number_words(1984).as_deref(), Some("nineteen eighty four"));
        assert_eq!(number_words(2000), None);
        assert_eq!(unit("oh"), Some(0));
        for n in 1..40 {
            assert_eq!(roman_value(&to_roman(n).to_uppercase()), Some(n));
        }
        for bad in ["", "iix", "vv", "iiii", "l", "xl", "ic"] {
            assert_eq!(roman_value(bad), None, "{bad}");
        }
    }
}
