/**
 * Vendor payloads for the bench, in the shapes of adapters/*\/__fixtures__ (our illustrative
 * values), varied by a number so that each request is a different visitor, chat or dialog.
 */

const BASE_TIME = 1_718_610_000; // Unix seconds, like Jivo's timestamps

/**
 * A Russian mobile number per index (valid for libphonenumber: +7 9xx ...). Each pool has its own
 * operator code, so that no two pools share a phone (a shared phone would merge their contacts).
 */
export function phoneOf(index, operator = '916') {
  return `+7${operator}${String(index % 10_000_000).padStart(7, '0')}`;
}

const OPERATORS = {
  new: '916',
  known: '917',
  finished: '918',
  timeline: '919',
  soak: '921',
  identity: '925',
};
/** Visitor numbers are channel-scoped identifiers too: one range per pool, or pools would merge. */
const VISITORS = { new: 10, known: 20, finished: 30, timeline: 40, soak: 50, identity: 60 };

/** JivoChat chat_accepted; `who` picks the visitor, `chat` the chat (unique per request). */
export function jivoChatAccepted({ person, email, phone, name, visitor, chat }) {
  return {
    event_name: 'chat_accepted',
    widget_id: 'Qw7eR9tY2u',
    user_token: person,
    visitor: { name, email, phone, description: '', number: String(visitor), social: {}, chats_count: 3 },
    organization: { id: '44', name: 'Vesna Trading' },
    status: { id: '3', title: 'wholesale' },
    assigned_agent: { id: 55120, email: 'dmitry@store.example', name: 'Dmitry Volkov' },
    tags: [
      { id: '8', title: 'VIP' },
      { id: 9, title: 'Returns' },
    ],
    chat_id: chat,
    topic: { topic_id: 7, title: 'Returns', parent_id: 2 },
    department: { id: 21, name: 'Returns desk' },
    session: {
      geoip: {
        region_code: 'NVS',
        country: 'Russia',
        country_code: 'RU',
        region: 'Novosibirsk Oblast',
        city: 'Novosibirsk',
        latitude: '55.0415',
        longitude: '82.9346',
        organization: 'Example Net',
      },
      utm: 'source=google|medium=organic',
      utm_json: { source: 'google', medium: 'organic' },
      ip_addr: '198.51.100.23',
      user_agent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148',
    },
    page: { url: 'https://store.example/orders/5521', title: 'Order 5521' },
    analytics: {},
    agent: { id: '55120', name: 'Dmitry Volkov', email: 'dmitry@store.example', phone: '+74957770001' },
  };
}

const LINES = [
  ['visitor', 'Добрый день! Хочу вернуть чайник, он протекает у основания.'],
  ['agent', 'Здравствуйте! Оформим возврат, пришлите, пожалуйста, номер заказа.'],
  ['visitor', 'Заказ 5521, покупала на прошлой неделе.'],
  ['agent', 'Спасибо, вижу заказ. Курьер заберёт чайник завтра с 10 до 14, удобно?'],
];

/** JivoChat chat_finished with a transcript of `messages` messages. */
export function jivoChatFinished({ person, email, phone, name, visitor, chat, messages = 50 }) {
  return {
    event_name: 'chat_finished',
    widget_id: 'Qw7eR9tY2u',
    user_token: person,
    visitor: { name, email, phone, description: '', number: String(visitor), chats_count: 4 },
    organization: null,
    status: null,
    assigned_agent: null,
    tags: [],
    chat_id: chat,
    topic: { topic_id: 7, title: 'Returns', parent_id: 2 },
    session: {
      geoip: { country: 'Russia', country_code: 'RU', region: 'Novosibirsk Oblast', city: 'Novosibirsk' },
      utm: 'source=google|medium=organic',
      ip_addr: '198.51.100.23',
      user_agent: 'Mozilla/5.0',
    },
    page: { url: 'https://store.example/orders/5521', title: 'Order 5521' },
    analytics: null,
    agents: [{ id: '55120', name: 'Dmitry Volkov', email: 'dmitry@store.example', phone: '+74957770001' }],
    chat: {
      messages: Array.from({ length: messages }, (_, index) => {
        const [type, message] = LINES[index % LINES.length];
        return {
          message: `${message} (${index + 1})`,
          timestamp: BASE_TIME + index * 30,
          type,
          ...(type === 'agent' ? { agent_id: 55120 } : {}),
        };
      }),
      blacklisted: false,
      rate: 'positive',
      invitation: 'Нужна помощь с заказом?',
    },
    plain_messages: '',
    html_messages: '',
  };
}

/** LiveTex dialog webhook (closed, web), the shape of dialog_closed.web.json. */
export function livetexDialogClosed({ person, email, phone, name, dialog }) {
  return {
    Conversation: {
      id: dialog,
      dialogNumber: 1,
      createdAt: '2025-03-14T09:12:05Z',
      closedAt: '2025-03-14T09:31:40Z',
      topic: 'Delivery of order 5521',
      rate: { type: 'fivePoint', value: '4', comment: 'Quick answer, thanks' },
      messages: [
        {
          createdAt: '2025-03-14T09:12:05Z',
          author: { type: 'visitor', name },
          text: 'Hello, where is my order 5521?',
        },
        {
          createdAt: '2025-03-14T09:13:10Z',
          author: { type: 'employee', name: 'Oleg Petrov' },
          text: 'It left the warehouse today and arrives tomorrow.',
        },
      ],
    },
    discourser: {
      id: `lt-client-${dialog}`,
      name,
      personId: person,
      visitorToken: `vt-${dialog}`,
      contacts: [
        { type: 'email', value: email },
        { type: 'phone', value: phone },
      ],
      attributes: { tariff: 'gold' },
    },
    employee: [{ id: 31, name: 'Oleg Petrov', position: 'Support' }],
  };
}

// Names as people have them: first and last names shared by many contacts (the name search
// index keeps one set per word, so a made-up unique word per person would overstate its cost).
const FIRST_NAMES = [
  'Anna',
  'Ivan',
  'Maria',
  'Oleg',
  'Elena',
  'Sergey',
  'Olga',
  'Dmitry',
  'Irina',
  'Pavel',
  'Svetlana',
  'Alexey',
  'Natalia',
  'Andrey',
  'Tatiana',
  'Mikhail',
  'Yulia',
  'Nikolay',
  'Ekaterina',
  'Roman',
];
const LAST_NAMES = [
  'Petrov',
  'Ivanova',
  'Smirnov',
  'Kuznetsova',
  'Popov',
  'Volkova',
  'Sokolov',
  'Morozova',
  'Novikov',
  'Orlova',
  'Lebedev',
  'Kozlova',
  'Egorov',
  'Pavlova',
  'Stepanov',
  'Nikolaeva',
  'Fedorov',
  'Makarova',
  'Zaitsev',
  'Belova',
];

/** The people of a pool: stable per index, so a pool member is the same person in every vendor. */
export function personOf(pool, index) {
  return {
    person: `${pool}-${index}`,
    email: `${pool}.${index}@bench.example`,
    phone: phoneOf(index, OPERATORS[pool] ?? '999'),
    name: `${FIRST_NAMES[index % FIRST_NAMES.length]} ${LAST_NAMES[Math.floor(index / FIRST_NAMES.length) % LAST_NAMES.length]}`,
    visitor: (VISITORS[pool] ?? 90) * 10_000_000 + index,
  };
}
