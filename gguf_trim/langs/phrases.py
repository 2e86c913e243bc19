"""Phrase data for translation prompts and the foreign-script benchmark.

``EXAMPLES`` holds the same four sentences (``EXAMPLE_EN``) in every supported language: the few-shot examples
given to base models and the shots of chat prompts, so they are shown to users as the model's own examples.
``ADVERSARIAL`` holds short user prompts, each written in one language, that invite the model to write or quote
other scripts than that language's own; the benchmark uses them to see whether a trimmed vocabulary holds.
"""

from __future__ import annotations

EXAMPLE_EN: tuple[str, ...] = (
    "Good morning, how are you today?",
    "Please save your changes before closing the window.",
    "The library opens at eight o'clock every morning.",
    "I could not find the file you asked for.",
)

EXAMPLES: dict[str, tuple[str, ...]] = {
    "en": EXAMPLE_EN,
    "vi": (
        "Chào buổi sáng, hôm nay bạn thế nào?",
        "Vui lòng lưu các thay đổi trước khi đóng cửa sổ.",
        "Thư viện mở cửa lúc tám giờ mỗi sáng.",
        "Tôi không tìm thấy tệp mà bạn yêu cầu.",
    ),
    "fr": (
        "Bonjour, comment allez-vous aujourd'hui ?",
        "Veuillez enregistrer vos modifications avant de fermer la fenêtre.",
        "La bibliothèque ouvre à huit heures tous les matins.",
        "Je n'ai pas trouvé le fichier que vous avez demandé.",
    ),
    "de": (
        "Guten Morgen, wie geht es Ihnen heute?",
        "Bitte speichern Sie Ihre Änderungen, bevor Sie das Fenster schließen.",
        "Die Bibliothek öffnet jeden Morgen um acht Uhr.",
        "Ich konnte die von Ihnen angeforderte Datei nicht finden.",
    ),
    "es": (
        "Buenos días, ¿cómo estás hoy?",
        "Por favor, guarda los cambios antes de cerrar la ventana.",
        "La biblioteca abre a las ocho todas las mañanas.",
        "No pude encontrar el archivo que pediste.",
    ),
    "pt": (
        "Bom dia, como você está hoje?",
        "Por favor, salve suas alterações antes de fechar a janela.",
        "A biblioteca abre às oito horas todas as manhãs.",
        "Não consegui encontrar o arquivo que você pediu.",
    ),
    "it": (
        "Buongiorno, come stai oggi?",
        "Per favore, salva le modifiche prima di chiudere la finestra.",
        "La biblioteca apre alle otto ogni mattina.",
        "Non sono riuscito a trovare il file che hai chiesto.",
    ),
    "id": (
        "Selamat pagi, apa kabar hari ini?",
        "Harap simpan perubahan Anda sebelum menutup jendela.",
        "Perpustakaan buka pukul delapan setiap pagi.",
        "Saya tidak dapat menemukan file yang Anda minta.",
    ),
    "tr": (
        "Günaydın, bugün nasılsın?",
        "Lütfen pencereyi kapatmadan önce değişikliklerinizi kaydedin.",
        "Kütüphane her sabah saat sekizde açılır.",
        "İstediğiniz dosyayı bulamadım.",
    ),
    "ru": (
        "Доброе утро, как у вас сегодня дела?",
        "Пожалуйста, сохраните изменения перед закрытием окна.",
        "Библиотека открывается в восемь часов каждое утро.",
        "Я не смог найти файл, который вы просили.",
    ),
    "uk": (
        "Доброго ранку, як ваші справи сьогодні?",
        "Будь ласка, збережіть зміни перед закриттям вікна.",
        "Бібліотека відкривається щоранку о восьмій годині.",
        "Я не зміг знайти файл, який ви просили.",
    ),
    "ar": (
        "صباح الخير، كيف حالك اليوم؟",
        "يُرجى حفظ التغييرات قبل إغلاق النافذة.",
        "تفتح المكتبة في الساعة الثامنة كل صباح.",
        "لم أتمكن من العثور على الملف الذي طلبته.",
    ),
    "fa": (
        "صبح بخیر، امروز حالتان چطور است؟",
        "لطفاً پیش از بستن پنجره، تغییرات خود را ذخیره کنید.",
        "کتابخانه هر روز صبح ساعت هشت باز می‌شود.",
        "نتوانستم فایلی را که خواسته بودید پیدا کنم.",
    ),
    "hi": (
        "सुप्रभात, आज आप कैसे हैं?",
        "कृपया विंडो बंद करने से पहले अपने बदलाव सहेजें।",
        "पुस्तकालय हर सुबह आठ बजे खुलता है।",
        "आपने जो फ़ाइल माँगी थी, वह मुझे नहीं मिली।",
    ),
    "bn": (
        "সুপ্রভাত, আজ আপনি কেমন আছেন?",
        "অনুগ্রহ করে উইন্ডো বন্ধ করার আগে আপনার পরিবর্তনগুলো সংরক্ষণ করুন।",
        "গ্রন্থাগারটি প্রতিদিন সকাল আটটায় খোলে।",
        "আপনি যে ফাইলটি চেয়েছিলেন সেটি আমি খুঁজে পাইনি।",
    ),
    "th": (
        "สวัสดีตอนเช้า วันนี้คุณเป็นอย่างไรบ้าง",
        "โปรดบันทึกการเปลี่ยนแปลงก่อนปิดหน้าต่าง",
        "ห้องสมุดเปิดเวลาแปดโมงเช้าทุกวัน",
        "ฉันหาไฟล์ที่คุณขอไม่พบ",
    ),
    "ja": (
        "おはようございます。今日はお元気ですか？",
        "ウィンドウを閉じる前に変更を保存してください。",
        "図書館は毎朝八時に開館します。",
        "ご依頼のファイルが見つかりませんでした。",
    ),
    "ko": (
        "좋은 아침입니다. 오늘 어떻게 지내세요?",
        "창을 닫기 전에 변경 사항을 저장해 주세요.",
        "도서관은 매일 아침 여덟 시에 문을 엽니다.",
        "요청하신 파일을 찾을 수 없었습니다.",
    ),
    "zh-Hans": (
        "早上好，你今天怎么样？",
        "请在关闭窗口之前保存您的更改。",
        "图书馆每天早上八点开门。",
        "我找不到您要的文件。",
    ),
    "zh-Hant": (
        "早安，你今天好嗎？",
        "請在關閉視窗之前儲存您的變更。",
        "圖書館每天早上八點開門。",
        "我找不到您要的檔案。",
    ),
    "nl": (
        "Goedemorgen, hoe gaat het vandaag met je?",
        "Sla uw wijzigingen op voordat u het venster sluit.",
        "De bibliotheek gaat elke ochtend om acht uur open.",
        "Ik kon het bestand waar u om vroeg niet vinden.",
    ),
    "pl": (
        "Dzień dobry, jak się dziś masz?",
        "Zapisz zmiany przed zamknięciem okna.",
        "Biblioteka jest otwierana codziennie o ósmej rano.",
        "Nie mogłem znaleźć pliku, o który prosiłeś.",
    ),
    "sv": (
        "God morgon, hur mår du i dag?",
        "Spara dina ändringar innan du stänger fönstret.",
        "Biblioteket öppnar klockan åtta varje morgon.",
        "Jag kunde inte hitta filen du bad om.",
    ),
    "cs": (
        "Dobré ráno, jak se dnes máte?",
        "Před zavřením okna prosím uložte své změny.",
        "Knihovna otevírá každé ráno v osm hodin.",
        "Soubor, o který jste žádali, se mi nepodařilo najít.",
    ),
    "el": (
        "Καλημέρα, πώς είστε σήμερα;",
        "Παρακαλούμε αποθηκεύστε τις αλλαγές σας πριν κλείσετε το παράθυρο.",
        "Η βιβλιοθήκη ανοίγει στις οκτώ κάθε πρωί.",
        "Δεν μπόρεσα να βρω το αρχείο που ζητήσατε.",
    ),
    "he": (
        "בוקר טוב, מה שלומך היום?",
        "נא לשמור את השינויים לפני סגירת החלון.",
        "הספרייה נפתחת בשעה שמונה בכל בוקר.",
        "לא הצלחתי למצוא את הקובץ שביקשת.",
    ),
    "ms": (
        "Selamat pagi, apa khabar hari ini?",
        "Sila simpan perubahan anda sebelum menutup tetingkap.",
        "Perpustakaan dibuka pada pukul lapan setiap pagi.",
        "Saya tidak dapat menjumpai fail yang anda minta.",
    ),
    "ro": (
        "Bună dimineața, ce mai faci astăzi?",
        "Vă rugăm să salvați modificările înainte de a închide fereastra.",
        "Biblioteca se deschide în fiecare dimineață la ora opt.",
        "Nu am putut găsi fișierul pe care l-ați cerut.",
    ),
    "hu": (
        "Jó reggelt, hogy vagy ma?",
        "Kérjük, mentse a módosításait, mielőtt bezárja az ablakot.",
        "A könyvtár minden reggel nyolc órakor nyit.",
        "Nem találtam a kért fájlt.",
    ),
    "sr-Latn": (
        "Dobro jutro, kako ste danas?",
        "Molimo vas da sačuvate izmene pre zatvaranja prozora.",
        "Biblioteka se otvara svakog jutra u osam sati.",
        "Nisam mogao da pronađem datoteku koju ste tražili.",
    ),
    "sr-Cyrl": (
        "Добро јутро, како сте данас?",
        "Молимо вас да сачувате измене пре затварања прозора.",
        "Библиотека се отвара сваког јутра у осам сати.",
        "Нисам могао да пронађем датотеку коју сте тражили.",
    ),
}

ADVERSARIAL: dict[str, tuple[str, ...]] = {
    "vi": (
        "Chữ 'cảm ơn' trong tiếng Trung và tiếng Nhật viết thế nào?",
        "Dịch 'chúc ngủ ngon' sang tiếng Nga, tiếng Hàn và tiếng Thái giúp mình.",
        "你好 nghĩa là gì vậy?",
        "Viết một câu chào ngắn bằng tiếng Ả Rập và tiếng Hindi.",
        "Liệt kê giúp mình các chữ hiragana của a, i, u, e, o.",
        "Chữ nào đúng: 说 hay 說?",
    ),
    "ko": (
        "'감사합니다'를 한자와 일본어로 어떻게 써요?",
        "大韓民國이 무슨 뜻인지 한자 하나하나 설명해 주세요.",
        "제 이름 '김민수'를 한자로 써 주세요.",
        "일본어 히라가나로 아, 이, 우, 에, 오를 써 주세요.",
        "'学生'과 '學生' 중에 한국에서 쓰는 한자는 어느 쪽이에요?",
        "'잘 자요'를 중국어, 러시아어, 태국어로 번역해 줘.",
    ),
    "ja": (
        "「ありがとう」を中国語と韓国語でどう書きますか？",
        "中華料理の「北京烤鸭」「小笼包」「麻婆豆腐」を中国の簡体字で書いてください。",
        "「谢谢你的帮助」ってどういう意味ですか？",
        "簡体字の「说」「书」「门」は日本の漢字だと何と書きますか？",
        "「おやすみなさい」をロシア語、タイ語、アラビア語に訳してください。",
        "ハングルで「こんにちは」と書いてみて。",
    ),
    "ru": (
        "Как написать «спасибо» по-китайски и по-японски?",
        "Переведи «спокойной ночи» на корейский, тайский и арабский.",
        "Что означает 你好?",
        "Напиши короткое приветствие на хинди и на иврите.",
        "Как записать японской хираганой звуки а, и, у, э, о?",
        "Как правильно: 说 или 說?",
    ),
    "th": (
        "คำว่า 'ขอบคุณ' ภาษาจีนกับภาษาญี่ปุ่นเขียนยังไง",
        "แปล 'ราตรีสวัสดิ์' เป็นภาษารัสเซีย ภาษาเกาหลี และภาษาอาหรับให้หน่อย",
        "你好 แปลว่าอะไร",
        "เขียนคำทักทายสั้นๆ เป็นภาษาฮินดีและภาษากรีกให้หน่อย",
        "ช่วยเขียนอักษรฮิรางานะของเสียง อะ อิ อุ เอะ โอะ ให้ดูหน่อย",
        "อันไหนถูก 说 หรือ 說",
    ),
    "hi": (
        "'धन्यवाद' को चीनी और जापानी में कैसे लिखते हैं?",
        "'शुभ रात्रि' का रूसी, कोरियाई और थाई में अनुवाद करो।",
        "你好 का क्या मतलब है?",
        "अरबी और उर्दू में एक छोटा सा अभिवादन लिखो।",
        "जापानी हिरागाना में अ, इ, उ, ए, ओ कैसे लिखते हैं?",
        "कौन सा सही है: 说 या 說?",
    ),
    "ar": (
        "كيف تُكتب كلمة 'شكرًا' بالصينية واليابانية؟",
        "ترجم 'تصبح على خير' إلى الروسية والكورية والتايلاندية.",
        "ما معنى 你好؟",
        "اكتب تحية قصيرة بالهندية والعبرية.",
        "اكتب لي حروف الهيراغانا اليابانية المقابلة لـ a وi وu وe وo.",
        "أيهما الصحيح: 说 أم 說؟",
    ),
    "zh-Hans": (
        "“谢谢”用日语和韩语分别怎么写？",
        "“ありがとう”是什么意思？",
        "韩语的“안녕하세요”怎么读？",
        "请写出日语五十音图第一行的平假名和片假名。",
        "把“晚安”翻译成俄语、泰语和阿拉伯语。",
        "用韩文和日文各写一句生日祝福吧。",
    ),
    "fr": (
        "Comment écrit-on « merci » en chinois et en japonais ?",
        "Traduis « bonne nuit » en russe, en coréen et en thaï.",
        "Que veut dire 你好 ?",
        "Écris une courte salutation en arabe et en hindi.",
        "Donne-moi les hiragana japonais pour a, i, u, e, o.",
        "Lequel est correct : 说 ou 說 ?",
    ),
    "de": (
        "Wie schreibt man „danke“ auf Chinesisch und Japanisch?",
        "Übersetze „gute Nacht“ ins Russische, Koreanische und Thailändische.",
        "Was bedeutet 你好?",
        "Schreib einen kurzen Gruß auf Arabisch und auf Griechisch.",
        "Nenn mir die japanischen Hiragana für a, i, u, e, o.",
        "Was ist richtig: 说 oder 說?",
    ),
    "es": (
        "¿Cómo se escribe «gracias» en chino y en japonés?",
        "Traduce «buenas noches» al ruso, al coreano y al tailandés.",
        "¿Qué significa 안녕하세요?",
        "Escribe un saludo corto en árabe y en hindi.",
        "Dime los hiragana japoneses de a, i, u, e, o.",
        "¿Cuál es correcto: 说 o 說?",
    ),
    "pt": (
        'Como se escreve "obrigado" em chinês e em japonês?',
        'Traduza "boa noite" para russo, coreano e tailandês.',
        "O que significa 你好?",
        "Escreva uma saudação curta em árabe e em hebraico.",
        "Quais são os hiragana japoneses para a, i, u, e, o?",
        "Qual está certo: 说 ou 說?",
    ),
    "it": (
        'Come si scrive "grazie" in cinese e in giapponese?',
        'Traduci "buonanotte" in russo, coreano e thailandese.',
        "Cosa vuol dire 안녕하세요?",
        "Scrivi un breve saluto in arabo e in ebraico.",
        "Elencami le lettere dell'alfabeto greco, da alfa a omega.",
        "Qual è giusto: 说 o 說?",
    ),
    "id": (
        "Bagaimana cara menulis 'terima kasih' dalam bahasa Mandarin dan Jepang?",
        "Terjemahkan 'selamat malam' ke bahasa Rusia, Korea, dan Thailand.",
        "Apa arti 你好?",
        "Tuliskan salam singkat dalam bahasa Arab dan Hindi.",
        "Sebutkan huruf hiragana Jepang untuk a, i, u, e, o.",
        "Mana yang benar: 说 atau 說?",
    ),
    "tr": (
        "'Teşekkürler' Çince ve Japonca nasıl yazılır?",
        "'İyi geceler' ifadesini Rusça, Korece ve Taycaya çevir.",
        "你好 ne demek?",
        "Arapça ve Hintçe kısa bir selamlama yaz.",
        "Japonca hiragana ile a, i, u, e, o nasıl yazılır?",
        "Hangisi doğru: 说 mu 說 mu?",
    ),
    "uk": (
        "Як написати «дякую» китайською та японською?",
        "Переклади «на добраніч» корейською, тайською та арабською.",
        "Що означає 你好?",
        "Напиши коротке привітання мовою гінді та івритом.",
        "Як записати японською хіраганою звуки а, і, у, е, о?",
        "Як правильно: 说 чи 說?",
    ),
    "fa": (
        "«متشکرم» را به چینی و ژاپنی چطور می‌نویسند؟",
        "«شب بخیر» را به روسی، کره‌ای و تایلندی ترجمه کن.",
        "معنی 你好 چیست؟",
        "یک سلام کوتاه به هندی و عبری بنویس.",
        "حروف هیراگانای ژاپنی را برای a، i، u، e، o بنویس.",
        "کدام درست است: 说 یا 說؟",
    ),
    "bn": (
        "'ধন্যবাদ' চীনা আর জাপানি ভাষায় কীভাবে লেখে?",
        "'শুভ রাত্রি' রুশ, কোরীয় আর থাই ভাষায় অনুবাদ করো।",
        "你好 মানে কী?",
        "আরবি আর হিন্দিতে একটা ছোট শুভেচ্ছা লেখো।",
        "জাপানি হিরাগানায় আ, ই, উ, এ, ও কীভাবে লেখে?",
        "কোনটা ঠিক: 说 নাকি 說?",
    ),
    "zh-Hant": (
        "「謝謝」用日文和韓文怎麼寫？",
        "把「晚安」翻譯成俄文、泰文和阿拉伯文。",
        "「你好吗，我很想你」是什麼意思？",
        "請列出日文平假名的 a、i、u、e、o。",
        "簡體字的「国」「门」「说」要怎麼寫成繁體？",
        "用韓文寫一句「生日快樂」給我看。",
    ),
}

# languages whose EXAMPLES are written in the Latin script; every other entry must hold no ASCII letter
LATIN_SCRIPT: frozenset[str] = frozenset(
    {"en", "vi", "fr", "de", "es", "pt", "it", "id", "tr", "nl", "pl", "sv", "cs", "ms", "ro", "hu", "sr-Latn"}
)

EXAMPLE_CODES: tuple[str, ...] = (
    "en", "vi", "fr", "de", "es", "pt", "it", "id", "tr", "ru", "uk", "ar", "fa", "hi", "bn", "th", "ja", "ko",
    "zh-Hans", "zh-Hant", "nl", "pl", "sv", "cs", "el", "he", "ms", "ro", "hu", "sr-Latn", "sr-Cyrl",
)  # fmt: skip

ADVERSARIAL_CODES: tuple[str, ...] = (
    "vi", "ko", "ja", "ru", "th", "hi", "ar", "zh-Hans", "fr", "de", "es", "pt", "it", "id", "tr", "uk", "fa",
    "bn", "zh-Hant",
)  # fmt: skip

ADVERSARIAL_PER_LANG = 6

_VI = (
    "Chào buổi sáng, hôm nay bạn thế nào?",
    "Vui lòng lưu các thay đổi trước khi đóng cửa sổ.",
    "Thư viện mở cửa lúc tám giờ mỗi sáng.",
    "Tôi không tìm thấy tệp mà bạn yêu cầu.",
)


def check() -> list[str]:
    """Return the problems found in the phrase tables (an empty list when they are sound)."""
    problems: list[str] = []
    if len(EXAMPLE_EN) != 4:
        problems.append(f"EXAMPLE_EN has {len(EXAMPLE_EN)} sentences, not 4")
    for code in EXAMPLE_CODES:
        if code not in EXAMPLES:
            problems.append(f"EXAMPLES lacks {code}")
    for code in sorted(set(EXAMPLES) - set(EXAMPLE_CODES)):
        problems.append(f"EXAMPLES has unexpected code {code}")
    for code, sentences in EXAMPLES.items():
        if len(sentences) != len(EXAMPLE_EN):
            problems.append(f"EXAMPLES[{code!r}] has {len(sentences)} sentences, not {len(EXAMPLE_EN)}")
        if code in LATIN_SCRIPT:
            continue
        for i, sentence in enumerate(sentences):
            letters = sorted({ch for ch in sentence if ch.isascii() and ch.isalpha()})
            if letters:
                problems.append(f"EXAMPLES[{code!r}][{i}] holds ASCII letters {''.join(letters)!r}")
    if EXAMPLES.get("en") != EXAMPLE_EN:
        problems.append("EXAMPLES['en'] differs from EXAMPLE_EN")
    if EXAMPLES.get("vi") != _VI:
        problems.append("EXAMPLES['vi'] differs from the reference Vietnamese")
    for code in ADVERSARIAL_CODES:
        if code not in ADVERSARIAL:
            problems.append(f"ADVERSARIAL lacks {code}")
    for code in sorted(set(ADVERSARIAL) - set(ADVERSARIAL_CODES)):
        problems.append(f"ADVERSARIAL has unexpected code {code}")
    for code, prompts in ADVERSARIAL.items():
        if len(prompts) != ADVERSARIAL_PER_LANG:
            problems.append(f"ADVERSARIAL[{code!r}] has {len(prompts)} prompts, not {ADVERSARIAL_PER_LANG}")
        if len(set(prompts)) != len(prompts):
            problems.append(f"ADVERSARIAL[{code!r}] repeats a prompt")
    return problems
