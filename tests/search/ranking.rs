//! How spoken queries find their documents: folding, fuzzy and sound-alike names, spoken
//! numbers, carrier phrases, structured fields, popularity, snippets and paging.

use super::*;

#[test]
fn accents_fold_on_both_sides() {
    let (_dir, engine) = engine_with(vec![
        city("rey", "Reykjavík", "", 100),
        city("oslo", "Oslo", "", 100),
    ]);
    assert_eq!(first(&engine, "weather in reykjavik"), "rey");
    assert_eq!(first(&engine, "weather in REYKJAVÍK"), "rey");
}

#[test]
fn fuzzy_matches_find_misspelled_names_and_rank_below_exact() {
    let (_dir, engine) = engine_with(vec![
        city("kal", "Kalamazoo", "Michigan", 100),
        city("oth", "Other Town", "Michigan", 100),
        song("rehab", "Rehab", "Amy Winehouse", 1),
        song("rehan", "Rehan", "Somebody", 1000),
    ]);
    // m -> n changes the sound code, so only the fuzzy match can find it.
    assert_eq!(first(&engine, "directions to kalanazoo"), "kal");
    // Both titles are one edit from each other: the exact one wins despite popularity.
    assert_eq!(first(&engine, "rehab"), "rehab");
    assert_eq!(first(&engine, "rehan"), "rehan");
}

#[test]
fn sound_alike_names_match() {
    let (_dir, engine) = engine_with(vec![
        city("phx", "Phoenix", "Arizona", 100),
        city("fen", "Fenwick", "", 100),
    ]);
    // Three edits away, but the same Double Metaphone code.
    assert_eq!(first(&engine, "weather in feenix"), "phx");
}

#[test]
fn spoken_numbers_match_digits_and_roman_numerals() {
    let (_dir, engine) = engine_with(vec![
        movie("gf1", "The Godfather", 900),
        movie("gf2", "The Godfather Part II", 100),
        movie("gf3", "The Godfather Part III", 500),
        movie("apollo", "Apollo 13", 100),
        movie("apollo18", "Apollo 18", 200),
    ]);
    assert_eq!(first(&engine, "show me the godfather part two"), "gf2");
    assert_eq!(first(&engine, "watch the godfather part three"), "gf3");
    assert_eq!(first(&engine, "watch apollo thirteen"), "apollo");
}

#[test]
fn carrier_phrase_intent_prefers_a_category_but_never_filters() {
    let (_dir, engine) = engine_with(vec![
        movie("chicago-film", "Chicago", 5000),
        city("chicago-city", "Chicago", "Illinois", 100),
        city("springfield", "Springfield", "Illinois", 100),
    ]);
    assert_eq!(first(&engine, "weather in chicago"), "chicago-city");
    assert_eq!(first(&engine, "watch chicago"), "chicago-film");
    // No film is called Springfield: the city still comes back.
    assert_eq!(first(&engine, "watch springfield"), "springfield");
    // A query made only of a carrier phrase is not stripped to nothing.
    assert!(engine
        .search(&SearchRequest {
            query: "play".into(),
            ..Default::default()
        })
        .is_ok());
}

#[test]
fn structured_fields_decide_between_namesakes() {
    let (_dir, engine) = engine_with(vec![
        city("spr-ma", "Springfield", "Massachusetts", 150_000),
        city("spr-il", "Springfield", "Illinois", 110_000),
        city("spr-mo", "Springfield", "Missouri", 160_000),
        song("kashmir-lz", "Kashmir", "Led Zeppelin", 10),
        song("kashmir-other", "Kashmir", "Some Cover Band", 3000),
    ]);
    assert_eq!(
        first(&engine, "directions to springfield illinois"),
        "spr-il"
    );
    assert_eq!(first(&engine, "play kashmir by led zeppelin"), "kashmir-lz");
}

#[test]
fn merged_and_split_words_still_match() {
    let (_dir, engine) = engine_with(vec![
        city("kal", "Kalamazoo", "Michigan", 100),
        song("kashmir", "Kashmir", "Led Zeppelin", 10),
        song("other", "Kashmir", "Someone Else", 3000),
        movie("slumdog", "Slumdog Millionaire", 100),
        movie("million", "The Millionaire", 3000),
    ]);
    assert_eq!(first(&engine, "show me kala mazoo on the map"), "kal");
    assert_eq!(first(&engine, "play kashmir by ledzeppelin"), "kashmir");
    assert_eq!(first(&engine, "show meslumdog millionaire"), "slumdog");
}

#[test]
fn popularity_breaks_ties_and_filters_are_hard() {
    let (_dir, engine) = engine_with(vec![
        city("paris-tx", "Paris", "Texas", 25_000),
        city("paris-fr", "Paris", "", 2_100_000),
        song("paris-song", "Paris", "A Band", 10),
    ]);
    assert_eq!(first(&engine, "paris"), "paris-fr");
    let songs = engine
        .search(&SearchRequest {
            query: "paris".into(),
            categories: vec!["song".into()],
            ..Default::default()
        })
        .unwrap();
    let ids: Vec<_> = songs.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["paris-song"]);
}

#[test]
fn snippets_highlight_matches_and_pages_chain() {
    let documents: Vec<Value> = (0..25)
        .map(|i| {
            json!({"id": format!("d{i}"), "title": format!("Harbor {i}"), "category": "city",
                        "body": format!("A quiet harbor town, number {i}.")})
        })
        .collect();
    let (_dir, engine) = engine_with(documents);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = engine
            .search(&SearchRequest {
                query: "harbor".into(),
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .unwrap();
        assert!(
            page.hits[0].snippet.contains("<b>harbor</b>"),
            "{}",
            page.hits[0].snippet
        );
        seen.extend(page.hits.into_iter().map(|h| h.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);

    let bad = engine.search(&SearchRequest {
        query: "something else".into(),
        page_token: token,
        ..Default::default()
    });
    assert!(matches!(bad, Err(SearchError::InvalidQuery(_))));
    let too_big = engine.search(&SearchRequest {
        query: "harbor".into(),
        page_size: 1000,
        ..Default::default()
    });
    assert!(matches!(too_big, Err(SearchError::InvalidQuery(_))));
}
