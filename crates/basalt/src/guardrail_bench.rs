//! `basalt guardrails bench`: the latency a guardrail adds to a request, measured
//! in-process on a 500-token input with the real embedding model. It times a
//! guardrail with every policy, and the same input under the lexical policies alone
//! (words, PII, regexes), so the share of the embedding work is visible.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};
use basalt_guardrails::assess::{Compiled, Content, OutputScope, Qualifier};
use basalt_guardrails::config::{GuardrailRequest, Source};
use serde_json::json;

use basalt_guardrails::Embedder;
use basalt_server::guardrails::{ScreenedEmbedder, StaticScreen};

use crate::calibrate::load_embedder;

/// About 500 tokens of ordinary support-chat text with a little PII in it.
pub(crate) const INPUT: &str =
    "Hello, my name is Maria Lopez and I am writing about my recent order. \
I placed it on the twelfth of last month and it still has not arrived. The tracking page \
says the parcel left the warehouse but nothing has changed for nine days. I tried calling \
the support line twice, and both times I waited for more than forty minutes before the \
call dropped. My email is maria.lopez@example.com if you need to reach me, and my phone \
number is (415) 555-0132. The order contained a pair of running shoes, two packs of \
socks and a water bottle. I paid with my usual card and the money has already left my \
account, so I would like to know what is going on. If the parcel is lost, I would \
prefer a refund rather than a replacement, because I needed the shoes for a race that \
is now only a week away. I have been a customer for several years and this is the first \
time something like this has happened, so I hope we can sort it out quickly. Could you \
please check with the courier and tell me where the parcel is? If you need the order \
number, it is on the confirmation email, but I can also send a screenshot. I would also \
like to update my delivery address for future orders, because I am moving to a new flat \
at the end of the month. The new address is 42 Harbour Street, Apt 5, Portland, OR \
97205. Please let me know whether I need to do anything else on my side. Thank you for \
your help, and have a nice day. By the way, the water bottle I ordered last time had a \
leaking lid, and the replacement you sent was the wrong colour. It is not a big problem, \
but I thought you should know so that other customers do not have the same issue. I \
also noticed that the size guide on your website lists different measurements on the \
product page and in the help centre, which made it hard to choose the right size. It \
would be great if someone could fix that. Finally, I wanted to ask whether you plan to \
restock the blue version of the trail shoes, since they sold out very quickly last \
spring and many runners in my club were hoping to buy them. Thanks again.";

/// The next turn of the conversation that `INPUT` starts.
const NEW_TURN: &str = "Thanks for the quick reply. The courier says the parcel is \
at their depot in Salem, so could you ask them to deliver it this week? If that is not \
possible, please refund the order to my card instead.";

fn full_guardrail() -> Result<Compiled> {
    let pii: Vec<_> = basalt_guardrails::pii::PiiType::ALL
        .iter()
        .map(|t| json!({"type": t.as_str(), "action": "ANONYMIZE"}))
        .collect();
    let filters: Vec<_> = ["HATE", "INSULTS", "SEXUAL", "VIOLENCE", "MISCONDUCT"]
        .iter()
        .map(|t| json!({"type": t, "inputStrength": "HIGH", "outputStrength": "HIGH"}))
        .chain(std::iter::once(
            json!({"type": "PROMPT_ATTACK", "inputStrength": "HIGH", "outputStrength": "NONE"}),
        ))
        .collect();
    let body = json!({
        "name": "bench",
        "blockedInputMessaging": "blocked",
        "blockedOutputsMessaging": "blocked",
        "wordPolicyConfig": {
            "wordsConfig": [{"text": "Project Falcon"}, {"text": "internal codename"}],
            "managedWordListsConfig": [{"type": "PROFANITY"}],
        },
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": pii,
            "regexesConfig": [{"name": "order", "pattern": "ORD-[0-9]{8}", "action": "ANONYMIZE"}],
        },
        "topicPolicyConfig": {"topicsConfig": [
            {"name": "Investment advice", "definition": "Recommendations about what to invest in.", "examples": ["Which stocks should I buy?"], "type": "DENY"},
            {"name": "Medical advice", "definition": "Diagnosis or treatment recommendations for a health problem.", "type": "DENY"},
            {"name": "Legal advice", "definition": "Advice on how to act in a legal dispute.", "type": "DENY"},
        ]},
        "contentPolicyConfig": {"filtersConfig": filters},
        "contextualGroundingPolicyConfig": {"filtersConfig": [
            {"type": "GROUNDING", "threshold": 0.5}, {"type": "RELEVANCE", "threshold": 0.5}]},
    });
    lexical_or_full(body)
}

fn lexical_guardrail() -> Result<Compiled> {
    let pii: Vec<_> = basalt_guardrails::pii::PiiType::ALL
        .iter()
        .map(|t| json!({"type": t.as_str(), "action": "ANONYMIZE"}))
        .collect();
    lexical_or_full(json!({
        "name": "bench-lexical",
        "blockedInputMessaging": "blocked",
        "blockedOutputsMessaging": "blocked",
        "wordPolicyConfig": {
            "wordsConfig": [{"text": "Project Falcon"}],
            "managedWordListsConfig": [{"type": "PROFANITY"}],
        },
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": pii,
            "regexesConfig": [{"name": "order", "pattern": "ORD-[0-9]{8}", "action": "ANONYMIZE"}],
        },
    }))
}

fn lexical_or_full(body: serde_json::Value) -> Result<Compiled> {
    let req: GuardrailRequest = serde_json::from_value(body)?;
    let definition = req.validate().map_err(|e| anyhow!("{e}"))?;
    Compiled::new(definition).map_err(|e| anyhow!("{e}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What a guardrail has kept from earlier evaluations when a timed run starts.
#[derive(Clone, Copy)]
enum Kept<'a> {
    /// Nothing: the input is new every time.
    Nothing,
    /// Everything from the runs before: the same input again.
    Everything,
    /// Only these contents, checked just before: for example a conversation's earlier
    /// turns, or a grounding source with an earlier reply.
    Only(&'a [Content]),
}

async fn time_runs<E: Embedder>(
    guardrail: &Compiled,
    embedder: &E,
    source: Source,
    contents: &[Content],
    runs: usize,
    kept: Kept<'_>,
) -> Result<(f64, f64)> {
    let evaluate =
        |contents| guardrail.evaluate(source, contents, embedder, OutputScope::Interventions);
    // One unmeasured run: topic vectors are computed on first use and kept.
    let first = evaluate(contents).await.map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "{source:?}: the screen cleared {} of {} windows; action {}",
        first.screened.0,
        first.screened.1,
        if first.intervened() {
            "GUARDRAIL_INTERVENED"
        } else {
            "NONE"
        }
    );
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        match kept {
            Kept::Nothing => guardrail.forget_vectors(),
            Kept::Everything => {}
            Kept::Only(seen) => {
                guardrail.forget_vectors();
                evaluate(seen).await.map_err(|e| anyhow!("{e}"))?;
            }
        }
        let t = Instant::now();
        evaluate(contents).await.map_err(|e| anyhow!("{e}"))?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

pub fn run(models_dir: &Path, runs: usize, windows_out: Option<&Path>) -> Result<()> {
    if let Some(path) = windows_out {
        // The peer embeds exactly the texts the guardrail embeds.
        let windows: Vec<&str> = basalt_guardrails::assess::scoring_units(&[INPUT]);
        std::fs::write(path, serde_json::to_string(&windows)?)?;
    }
    let (embedder, _, model_dir) = load_embedder(models_dir)?;
    let screen = StaticScreen::load_or_build(&embedder.0, &model_dir, models_dir)
        .map_err(|e| anyhow!("the guardrail screen: {e}"))?;
    let cascade = ScreenedEmbedder {
        model: &embedder,
        screen: &screen,
    };
    let words = INPUT.split_whitespace().count();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let full = full_guardrail()?;
        let lexical = lexical_guardrail()?;
        let input = [Content::text(INPUT)];
        let new = Kept::Nothing;
        let (l50, l99) = time_runs(&lexical, &embedder, Source::Input, &input, runs, new).await?;
        let (m50, m99) = time_runs(&full, &embedder, Source::Input, &input, runs, new).await?;
        let (f50, f99) = time_runs(&full, &cascade, Source::Input, &input, runs, new).await?;
        let again = Kept::Everything;
        let (s50, s99) = time_runs(&full, &embedder, Source::Input, &input, runs, again).await?;
        let conversation = [Content::text(INPUT), Content::text(NEW_TURN)];
        let (n50, n99) =
            time_runs(&full, &embedder, Source::Input, &conversation, runs, Kept::Only(&input)).await?;
        // The floor: the model alone on the same pieces, in one call.
        let windows: Vec<String> = basalt_guardrails::assess::scoring_units(&[INPUT])
            .into_iter()
            .map(String::from)
            .collect();
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            embedder.0.embed(windows.clone()).await.map_err(|e| anyhow!("{e}"))?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let (e50, e99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
        let reply = |text: &str| {
            [
                Content { text: INPUT.to_string(), qualifiers: vec![Qualifier::GroundingSource] },
                Content { text: "Where is my parcel?".into(), qualifiers: vec![Qualifier::Query] },
                Content { text: text.into(), qualifiers: vec![Qualifier::GuardContent] },
            ]
        };
        let grounded = reply("Your parcel left the warehouse nine days ago; we will ask the courier where it is.");
        let earlier = reply("We are sorry that your order is late.");
        let (c50, c99) = time_runs(&full, &cascade, Source::Output, &grounded, runs, new).await?;
        let (g50, g99) =
            time_runs(&full, &cascade, Source::Output, &grounded, runs, Kept::Only(&earlier)).await?;
        println!(
            "Guardrail latency, {runs} runs each, input of {words} words ({} characters, about 500 tokens):\n",
            INPUT.len()
        );
        println!("| Guardrail | Source | p50 ms | p99 ms |\n|---|---|---|---|");
        println!("| words + all 31 PII types + regex | INPUT | {l50:.2} | {l99:.2} |");
        println!("| every policy (also 3 topics, 6 content filters), model only (no screen) | INPUT | {m50:.1} | {m99:.1} |");
        println!("| every policy, screen then model | INPUT | {f50:.1} | {f99:.1} |");
        println!("| every policy, the same input seen before (vectors kept) | INPUT | {s50:.1} | {s99:.1} |");
        println!("| every policy, the input as history seen before, plus a new {}-word turn | INPUT | {n50:.1} | {n99:.1} |", NEW_TURN.split_whitespace().count());
        println!("| every policy, screen then model, with grounding source (new) and query | OUTPUT (short reply) | {c50:.1} | {c99:.1} |");
        println!("| every policy, screen then model, with grounding source and query seen before, new reply | OUTPUT (short reply) | {g50:.1} | {g99:.1} |");
        println!("| embedding model alone, the {} windows in one call | - | {e50:.1} | {e99:.1} |", windows.len());
        Ok(())
    })
}
