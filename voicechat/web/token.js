// The access token: from the join URL's fragment (#token=...) or ?token=, remembered in localStorage so a
// reload works, and removed from the visible URL (and so from history and screenshots).

const STORAGE_KEY = 'voicechat.token';

/** Splits `a=1&token=x&b=2` into the token (percent-decoded, '+' kept as is) and the other pairs. */
function takeToken(params) {
  let token = null;
  const rest = [];
  for (const pair of params.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (key === 'token' && token === null) {
      try {
        token = decodeURIComponent(eq < 0 ? '' : pair.slice(eq + 1));
      } catch {
        token = pair.slice(eq + 1);
      }
    } else if (key !== 'token') {
      rest.push(pair);
    }
  }
  return { token, rest: rest.join('&') };
}

/** The token in `href` (fragment first, then query) and the same URL without it; token null when absent. */
export function extractToken(href) {
  const url = new URL(href);
  const fromHash = takeToken(url.hash.replace(/^#/, ''));
  const fromQuery = takeToken(url.search.replace(/^\?/, ''));
  if (fromHash.token !== null) url.hash = fromHash.rest ? `#${fromHash.rest}` : '';
  if (fromQuery.token !== null) url.search = fromQuery.rest ? `?${fromQuery.rest}` : '';
  const token = fromHash.token ?? fromQuery.token;
  return { token: token && token.trim() ? token.trim() : null, cleanUrl: url.toString() };
}

/** Reads the token from the page URL (cleaning it) or storage; null when the user must type it. */
export function loadToken(win = window) {
  const { token, cleanUrl } = extractToken(win.location.href);
  if (cleanUrl !== win.location.href) win.history.replaceState(win.history.state, '', cleanUrl);
  if (token) {
    saveToken(token, win);
    return token;
  }
  try {
    return win.localStorage.getItem(STORAGE_KEY) || null;
  } catch {
    return null; // storage disabled (private mode): the form asks each time
  }
}

export function saveToken(token, win = window) {
  try {
    win.localStorage.setItem(STORAGE_KEY, token);
  } catch {
    /* storage disabled: keep it for this page only */
  }
}

export function forgetToken(win = window) {
  try {
    win.localStorage.removeItem(STORAGE_KEY);
  } catch {
    /* nothing stored */
  }
}
