//! WhatsApp media through the whole gateway (issue 9 section 6: "an inbound
//! photo reaches the agent"): the plugin turns a media id into the lookup
//! request, the host downloads the lookaside URL with the bearer filled in
//! and hands the file to the agent (the `openai` provider, against the fake
//! OpenAI server, as image input).
//!
//! These wait for the host's attachment download and agent image input
//! (h-media); the plugin's half (the lookup and the placeholder bearer) is
//! tested in `whatsapp.rs`.

use base64::Engine;
use pincer::channels::access::DmPolicy;
use pincer::fakes::whatsapp::Contact;
use pincer_tests::fake_openai::{FakeOpenAi, Script};
use pincer_tests::whatsapp::WaRig;

/// A gateway with the WhatsApp channel whose agent is the fake OpenAI server.
async fn rig(fake: &FakeOpenAi) -> WaRig {
    let base = fake.base_url();
    WaRig::start_with(Default::default(), DmPolicy::Open, move |opts| {
        opts.agent.provider = "openai".into();
        opts.agent.openai.base_url = base;
        opts.agent.openai.model = "gpt-test".into();
        opts.agent.openai.api_key = Some("sk-test".into());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_photo_reaches_the_agent_as_image_input() {
    let fake = FakeOpenAi::start(vec![Script::text(&["a ", "cat"])]).await;
    let r = rig(&fake).await;
    let ada = Contact::new("4915112345678", "Ada");
    let png = b"\x89PNG\r\n\x1a\n fake cat picture";
    let media = r.wa.add_media(png, "image/png", "cat.png");
    let push =
        r.wa.batch()
            .image(&ada, &media, Some("what is this?"))
            .build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);

    let sent = r.wa.wait_for_sent(&ada.wa_id, 1).await;
    assert_eq!(sent[0].text(), Some("a cat"));
    assert_eq!(sent[0].reply_to(), Some(push.message_ids[0].as_str()));
    // Both Graph steps carried the real token, filled in by the host.
    let bearer = format!("Bearer {}", r.wa.config().access_token);
    for step in ["media", "media_download"] {
        let calls = r.wa.calls_of(step);
        assert_eq!(calls.len(), 1, "{step}: {calls:?}");
        assert_eq!(calls[0].header("authorization"), Some(bearer.as_str()));
    }
    // The model saw the caption and the picture's bytes.
    let request = fake.requests()[0].to_string();
    assert!(request.contains("what is this?"), "{request}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    assert!(request.contains(&b64), "image bytes missing: {request}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_document_reaches_the_agent_as_a_described_file() {
    let fake = FakeOpenAi::start(vec![Script::text(&["got it"])]).await;
    let r = rig(&fake).await;
    let ada = Contact::new("4915112345678", "Ada");
    let media =
        r.wa.add_media(b"%PDF-1.7 quarterly", "application/pdf", "q3-report.pdf");
    let push = r.wa.batch().document(&ada, &media, None).build();
    assert_eq!(r.wa.push(&r.webhook_url(), &push).await.status, 200);
    let sent = r.wa.wait_for_sent(&ada.wa_id, 1).await;
    assert_eq!(sent[0].text(), Some("got it"));
    assert_eq!(r.wa.calls_of("media_download").len(), 1);
    let request = fake.requests()[0].to_string();
    assert!(request.contains("q3-report.pdf"), "{request}");
}
