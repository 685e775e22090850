//! Issue 22, the words of the shipped emails at their edges: the install email
//! says what prevents support tickets (don't delete the eSIM, roaming and the
//! data line on arrival, Samsung's path beside the Pixel's, a caveat on the
//! Android button, manual entry per platform, the APN as a troubleshooting
//! line) in every language; Latin-American Spanish has its own menu names;
//! English speaks with contractions and says "deactivated", not "revoked";
//! the reviewers' wording fixes hold. Rendered through the public API, and
//! once over SMTP from a real ORDER_STATUS with the provider faked on loopback.

use crate::templates::brand;
use std::path::{Path, PathBuf};
use std::time::Duration;

use esim_notify::render::{sample_vars, NoticeClass, Rendered, Templates};
use serde_json::json;

use crate::fake_provider::{self as fake, FakeProvider};
use crate::helpers::{eventually, spawn_app};
use crate::locales::visible;

const AC: &str = "LPA:1$rsp.example.net$A1B2-C3D4-E5F6";

fn shipped() -> Templates {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    Templates::load(&dir, "en", chrono_tz::UTC).unwrap_or_else(|p| {
        panic!(
            "{}",
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn render(t: &Templates, name: &str, class: NoticeClass, locale: &str, full: bool) -> Rendered {
    let vars = sample_vars(class, full, &brand());
    t.render(name, Some(locale), &vars)
        .unwrap_or_else(|e| panic!("{name} {locale}: {e}"))
}

/// The hidden preview text of an HTML part.
fn preheader(html: &str) -> String {
    let body = html.split("<body").nth(1).expect("a body");
    let div = body.split("<div").nth(1).expect("the preheader");
    div.split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned()
}

/// What one language's install email must say (visible text, `>` as the reader sees it).
struct Install {
    locale: &'static str,
    samsung: &'static str,
    pixel: &'static str,
    iphone: &'static str,
    dont_delete: &'static str,
    arrival: &'static str,
    android_caveat: &'static str,
    manual_iphone: &'static str,
    manual_android: &'static str,
    apn_line: &'static str,
    /// Android's menus differ by maker and version: said, not guessed.
    hedge: &'static str,
    /// The old words: "keep this email", the doubtful menu names.
    gone: &'static [&'static str],
}

const INSTALL: [Install; 6] = [
    Install {
        locale: "en",
        samsung: "Settings > Connections > SIM manager > Add eSIM",
        pixel: "Settings > Network & internet > SIMs > Add eSIM",
        iphone: "Settings > Cellular (or Mobile Data) > Add eSIM > Use QR Code",
        dont_delete: "don't delete the eSIM from your phone",
        arrival: "Turn on data roaming for this eSIM and choose it as your line for mobile data",
        android_caveat: "works only on some recent phones",
        manual_iphone: "Enter Details Manually",
        manual_android: "enter the whole code",
        apn_line: "Set this eSIM's APN to internet",
        hedge: "On Android the names vary by phone and version.",
        gone: &["Keep this email", "Mobile Service"],
    },
    Install {
        locale: "es",
        samsung: "Ajustes > Conexiones > Administrador de SIM > Añadir eSIM",
        pixel: "Ajustes > Redes e Internet > SIMs > Añadir eSIM",
        iphone: "Ajustes > Datos móviles > Añadir eSIM > Usar código QR",
        dont_delete: "no elimines la eSIM del teléfono",
        arrival: "Activa la itinerancia de datos en esta eSIM y elígela como línea para los datos móviles",
        android_caveat: "solo funciona en algunos teléfonos recientes",
        manual_iphone: "introducir los datos manualmente",
        manual_android: "introduce el código completo",
        apn_line: "Pon internet como APN de esta eSIM",
        hedge: "En Android los nombres cambian según el teléfono y la versión.",
        gone: &["Guarda este correo", "Servicio móvil", "introdúcela"],
    },
    Install {
        locale: "es-419",
        samsung: "Configuración > Conexiones > Administrador de SIM > Agregar eSIM",
        pixel: "Configuración > Redes e Internet > SIMs > Agregar eSIM",
        iphone: "Configuración > Celular > Agregar eSIM > Usar código QR",
        dont_delete: "no elimines la eSIM del celular",
        arrival: "Activa el roaming de datos en esta eSIM y elígela como línea para los datos celulares",
        android_caveat: "solo funciona en algunos celulares recientes",
        manual_iphone: "ingresar los datos manualmente",
        manual_android: "ingresa el código completo",
        apn_line: "Pon internet como APN de esta eSIM",
        hedge: "En Android los nombres cambian según el celular y la versión.",
        gone: &[
            "Guarda este correo",
            "Ajustes",
            "Añadir",
            "Datos móviles",
            "itinerancia",
        ],
    },
    Install {
        locale: "fr",
        samsung: "Paramètres > Connexions > Gestionnaire de cartes SIM > Ajouter une eSIM",
        pixel: "Paramètres > Réseau et Internet > SIM > Ajouter une eSIM",
        iphone: "Réglages > Données cellulaires > Ajouter une eSIM > Utiliser un code QR",
        dont_delete: "ne la supprimez pas de votre téléphone",
        arrival: "Activez l’itinérance des données pour cette eSIM et choisissez-la comme ligne pour les données mobiles",
        android_caveat: "ne fonctionne que sur certains téléphones récents",
        manual_iphone: "saisir les informations manuellement",
        manual_android: "saisissez le code complet",
        apn_line: "Indiquez internet comme APN de cette eSIM",
        hedge: "Sur Android, les intitulés varient selon le téléphone et la version.",
        gone: &["Conservez cet e-mail", "Service mobile", "en un geste"],
    },
    Install {
        locale: "de",
        samsung: "Einstellungen > Verbindungen > SIM-Manager > eSIM hinzufügen",
        pixel: "Einstellungen > Netzwerk & Internet > SIMs > eSIM hinzufügen",
        iphone: "Einstellungen > Mobilfunk > eSIM hinzufügen > QR-Code verwenden",
        dont_delete: "Löschen Sie die eSIM nach der Installation nicht von Ihrem Smartphone",
        arrival: "Schalten Sie Datenroaming für diese eSIM ein und wählen Sie sie für mobile Daten aus",
        android_caveat: "funktioniert nur auf manchen neueren Smartphones",
        manual_iphone: "Details manuell eingeben",
        manual_android: "den vollständigen Code eingeben",
        apn_line: "Tragen Sie internet als APN dieser eSIM ein",
        hedge: "Unter Android heißen die Menüs je nach Smartphone und Version etwas anders.",
        gone: &["Bewahren Sie diese E-Mail auf", "Telefon", "von Hand"],
    },
    Install {
        locale: "pt",
        samsung: "Configurações > Conexões > Gerenciador de SIM > Adicionar eSIM",
        pixel: "Configurações > Rede e Internet > Chips > Adicionar eSIM",
        iphone: "Ajustes > Celular > Adicionar eSIM > Usar Código QR",
        dont_delete: "não apague o eSIM do celular",
        arrival: "Ative o roaming de dados deste eSIM e escolha-o como a linha de dados móveis",
        android_caveat: "só funciona em alguns celulares mais recentes",
        manual_iphone: "inserir os dados manualmente",
        manual_android: "digite o código completo",
        apn_line: "Defina internet como APN deste eSIM",
        hedge: "No Android os nomes variam conforme o aparelho e a versão.",
        gone: &["Guarde este e-mail"],
    },
];

/// Both parts of an email as a reader sees them, with French no-break spaces
/// as plain ones so one expectation serves both.
fn both_parts(r: &Rendered) -> [String; 2] {
    [r.text.clone(), visible(&r.html)]
        .map(|p| p.replace(['\u{a0}', '\u{202f}'], " ").replace("&gt;", ">"))
}

#[test]
fn the_install_email_says_what_prevents_support_tickets_in_every_language() {
    let t = shipped();
    for l in &INSTALL {
        let r = render(&t, "esim_ready", NoticeClass::Ready, l.locale, true);
        for part in both_parts(&r) {
            for want in [
                l.samsung,
                l.pixel,
                l.iphone,
                l.dont_delete,
                l.arrival,
                l.android_caveat,
                l.manual_iphone,
                l.manual_android,
                l.apn_line,
                l.hedge,
            ] {
                assert!(part.contains(want), "{}: `{want}` in\n{part}", l.locale);
            }
            for old in l.gone {
                assert!(!part.contains(old), "{}: `{old}` in\n{part}", l.locale);
            }
            // The iPhone gets the address and code, Android the whole code,
            // and the APN is no longer in the box: it follows, as a remedy.
            let (smdp, whole) = (
                part.find("SM-DP+").expect("SM-DP+ address"),
                part.find(AC).expect("the whole code"),
            );
            let apn = part.find("APN").expect("the APN line");
            assert!(smdp < whole, "{}: {part}", l.locale);
            assert!(
                apn > whole && apn > part.find(l.dont_delete).unwrap(),
                "{}: the APN comes after the manual entry: {part}",
                l.locale
            );
        }
    }
}

#[test]
fn an_install_email_without_the_split_code_asks_for_the_whole_code() {
    // A minimal notice has only the activation code: no iPhone box without its
    // fields, no APN line without an APN, no one-tap caveat without buttons.
    let t = shipped();
    for l in &INSTALL {
        let r = render(&t, "esim_ready", NoticeClass::Ready, l.locale, false);
        for part in both_parts(&r) {
            assert!(part.contains(AC), "{}: {part}", l.locale);
            assert!(!part.contains("SM-DP+"), "{}: {part}", l.locale);
            assert!(!part.contains("APN"), "{}: {part}", l.locale);
            assert!(!part.contains(l.android_caveat), "{}: {part}", l.locale);
            assert!(part.contains(l.dont_delete), "{}: {part}", l.locale);
            assert!(part.contains(l.arrival), "{}: {part}", l.locale);
        }
    }
}

#[test]
fn latin_american_spanish_overrides_whole_templates_and_keeps_the_rest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/es-419");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "esim_activated.html.hbs",
            "esim_activated.subject.hbs",
            "esim_activated.txt.hbs",
            "esim_ready.html.hbs",
            "esim_ready.subject.hbs",
            "esim_ready.txt.hbs",
        ],
        "all three parts of each template it changes"
    );
    let t = shipped();
    let problems = t.check(
        &[
            ("esim_ready".to_owned(), NoticeClass::Ready),
            ("esim_activated".to_owned(), NoticeClass::Status),
        ],
        &brand(),
    );
    assert!(problems.is_empty(), "{problems:?}");

    let active = render(&t, "esim_activated", NoticeClass::Status, "es-419", true);
    assert_eq!(active.subject, "Tu eSIM ya está activa");
    for part in both_parts(&active) {
        assert!(part.contains("roaming de datos"), "{part}");
        assert!(part.contains("datos celulares"), "{part}");
        assert!(!part.contains("itinerancia"), "{part}");
    }
    // Spain keeps its own words.
    let spain = render(&t, "esim_activated", NoticeClass::Status, "es", true);
    assert!(spain.text.contains("itinerancia de datos"));
    // What es-419 does not override comes from es/, in Spanish.
    let expired = render(&t, "esim_expired", NoticeClass::Status, "es-419", true);
    assert_eq!(expired.subject, "Tu eSIM ha caducado");
    assert!(expired.html.contains("<html lang=\"es-419\">"));
}

#[test]
fn english_says_deactivated_and_speaks_like_a_friendly_service() {
    let t = shipped();
    let revoked = render(&t, "esim_revoked", NoticeClass::Status, "en", true);
    assert_eq!(revoked.subject, "Your eSIM has been deactivated");
    for part in both_parts(&revoked) {
        assert!(part.contains("has been deactivated"), "{part}");
        assert!(!part.to_lowercase().contains("revoked"), "{part}");
    }
    for (name, class) in [
        ("esim_ready", NoticeClass::Ready),
        ("esim_activated", NoticeClass::Status),
        ("esim_cancelled", NoticeClass::Status),
        ("esim_revoked", NoticeClass::Status),
        ("esim_expired", NoticeClass::Status),
        ("esim_expired_unused", NoticeClass::Status),
        ("validity_usage", NoticeClass::Validity),
    ] {
        let r = render(&t, name, class, "en", true);
        for part in both_parts(&r) {
            let body = part.split("Questions?").next().unwrap();
            for stiff in [
                "cannot", "can not", "did not", "do not", "will not", "We will", "We are",
                "you are", "Here is", "Cannot",
            ] {
                assert!(!body.contains(stiff), "{name}: `{stiff}` in {body}");
            }
        }
    }
    let active = render(&t, "esim_activated", NoticeClass::Status, "en", true);
    assert!(active.text.contains("If you can't get online"));
    assert!(active.text.contains("We'll let you know"));
    // The expiry email thanks and leaves the door open, without a sales pitch.
    let expired = render(&t, "esim_expired", NoticeClass::Status, "en", true);
    assert!(expired
        .text
        .contains("Thanks for choosing Example eSIM for your trip."));
    assert!(!expired.text.contains("Get a new plan"));
}

#[test]
fn the_reviewers_wording_fixes_hold() {
    let t = shipped();
    let one = |name: &str, class: NoticeClass, locale: &str| -> (String, String, String) {
        let r = render(&t, name, class, locale, true);
        let [text, html] = both_parts(&r);
        (preheader(&r.html), text, html)
    };
    // FR
    let (_, text, html) = one("esim_ready", NoticeClass::Ready, "fr");
    for part in [&text, &html] {
        assert!(
            part.contains("Installation en un clic") || part.contains("INSTALLATION EN UN CLIC")
        );
        assert!(part
            .to_lowercase()
            .contains("saisissez les informations manuellement"));
    }
    let (pre, text, _) = one("esim_expired", NoticeClass::Status, "fr");
    assert!(text.contains("Merci d’avoir choisi Example eSIM pour votre voyage."));
    assert!(pre.contains("Merci d’avoir choisi Example eSIM pour votre voyage."));
    // DE
    let (_, text, html) = one("esim_ready", NoticeClass::Ready, "de");
    assert!(html.contains("Oder manuell eingeben") && text.contains("ODER MANUELL EINGEBEN"));
    assert!(html.contains("Smartphone") && !html.contains("Telefon"));
    let (pre, text, html) = one("esim_expired_unused", NoticeClass::Status, "de");
    for part in [&text, &html] {
        assert!(
            part.contains("Sie lässt sich weder installieren noch kann sie online gehen."),
            "{part}"
        );
    }
    assert!(!pre.contains("Ihre Gültigkeit"), "{pre}");
    // ES: the preheader is tú, like the email.
    let (pre, _, _) = one("esim_expired_unused", NoticeClass::Status, "es");
    assert!(!pre.starts_with("Su "), "{pre}");
    assert!(pre.contains("antes de que la usaras"), "{pre}");
    let (_, text, html) = one("esim_ready", NoticeClass::Ready, "es");
    assert!(
        html.contains("O introduce los datos a mano")
            && text.contains("O INTRODUCE LOS DATOS A MANO")
    );
    // PT: the future, once the plan has ended.
    let (_, text, html) = one("validity_usage", NoticeClass::Validity, "pt");
    for part in [&text, &html] {
        assert!(
            part.contains("seu eSIM não vai mais conseguir se conectar à internet"),
            "{part}"
        );
    }
}

/// The install email as a customer of `locale` receives it: bound by the
/// order's transactionId, an ORDER_STATUS, the provider's answer on loopback.
/// Returns the subject, the text part and what the HTML part shows.
async fn install_email_for(locale: &str, tz: &str) -> (String, String, String) {
    let fake = FakeProvider::start_with(vec![], move |_| {
        fake::page(
            vec![fake::esim(
                "26120416000001",
                "8943108170000779991",
                ORDER,
                LIVE_AC,
            )],
            1,
            1,
        )
    })
    .await;
    let app = spawn_app(&format!(
        "[provider]\naccess_code = \"fake-code\"\nbase_url = \"{}\"\ntimeout = \"1s\"\n",
        fake.base_url
    ))
    .await;
    let (status, body) = app
        .bind(
            json!({"email": "traveller@example.com", "name": "Alex", "locale": locale,
                     "timezone": tz, "transactionId": TX}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event = json!({
        "notifyType": "ORDER_STATUS", "notifyId": "w22-1",
        "eventGenerateTime": "2026-12-04T16:00:00Z",
        "content": {"orderNo": ORDER, "orderStatus": "GOT_RESOURCE", "transactionId": TX}
    });
    assert_eq!(app.post(&event.to_string()).await.0, 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            !app.received().is_empty()
        })
        .await,
        "{locale}: the install email did not arrive"
    );
    let raw = app.received()[0].clone();
    app.stop().await;
    let mail = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    let subject = mail.subject().unwrap_or_default().to_owned();
    let text = mail.body_text(0).expect("a text part").to_string();
    let html = visible(&mail.body_html(0).expect("an HTML part")).replace("&gt;", ">");
    (subject, text, html)
}

const ORDER: &str = "B26120416000001";
const TX: &str = "7544949834056-1-TR_50_30";
const LIVE_AC: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_german_customer_receives_the_install_email_that_says_what_matters() {
    let (subject, text, html) = install_email_for("de", "Europe/Berlin").await;
    assert_eq!(subject, "Ihre eSIM ist bereit zur Installation");
    for part in [&text, &html] {
        for want in [
            "Android (Samsung): Einstellungen > Verbindungen > SIM-Manager > eSIM hinzufügen.",
            "Löschen Sie die eSIM nach der Installation nicht von Ihrem Smartphone",
            "wählen Sie sie für mobile Daten aus",
            "funktioniert nur auf manchen neueren Smartphones",
            "SM-DP+-Adresse: rsp-eu.redteamobile.com",
            "Tragen Sie drei.at als APN dieser eSIM ein",
            LIVE_AC,
        ] {
            assert!(part.contains(want), "`{want}` in\n{part}");
        }
        assert!(!part.contains("Bewahren Sie diese E-Mail auf"), "{part}");
    }
}

/// A Mexican customer reads the Latin-American menu names (es-MX -> es-419 -> es,
/// CLDR's parent locales; the negotiation is h-c1's), with Mexican numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mexican_customer_receives_the_latin_american_menu_names() {
    let (subject, text, html) = install_email_for("es-MX", "America/Mexico_City").await;
    assert_eq!(subject, "Tu eSIM está lista para instalar");
    for part in [&text, &html] {
        for want in [
            "iPhone: Configuración > Celular > Agregar eSIM > Usar código QR.",
            "Activa el roaming de datos en esta eSIM",
            "no elimines la eSIM del celular",
        ] {
            assert!(part.contains(want), "`{want}` in\n{part}");
        }
        for spain in ["Ajustes", "Añadir eSIM", "itinerancia"] {
            assert!(!part.contains(spain), "`{spain}` in\n{part}");
        }
    }
}

/// The reseller's accent colours the links of these emails: no colour of ours
/// is left in them (`brand.accent_color`, SPEC §3; buttons and the layout take
/// it in the partials).
#[test]
fn links_in_the_install_and_unused_expiry_emails_take_the_brand_accent() {
    let t = shipped();
    let mut b = brand();
    b.insert("accent_color".to_owned(), "#c2185b".to_owned());
    for (name, class) in [
        ("esim_ready", NoticeClass::Ready),
        ("esim_expired_unused", NoticeClass::Status),
    ] {
        for locale in ["en", "es", "es-419", "fr", "de", "pt"] {
            let vars = sample_vars(class, true, &b);
            let html = t.render(name, Some(locale), &vars).unwrap().html;
            let links: Vec<&str> = html
                .split("<a ")
                .skip(1)
                .filter(|a| a.contains("class=\"link\""))
                .collect();
            assert!(!links.is_empty(), "{name} {locale}: {html}");
            for a in links {
                let tag = a.split('>').next().unwrap();
                assert!(tag.contains("color:#c2185b;"), "{name} {locale}: {tag}");
            }
        }
    }
}
