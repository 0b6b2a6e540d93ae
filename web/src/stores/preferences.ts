import { ref, watch } from 'vue'
import { defineStore } from 'pinia'
import { i18n, type AppLocale, SUPPORTED_LOCALES } from '@/locales'

export type Theme = 'light' | 'dark'

const THEME_KEY = 'workbench.theme'
const LOCALE_KEY = 'workbench.locale'

function read(key: string): string | null {
  try {
    return localStorage.getItem(key)
  } catch {
    return null
  }
}
function write(key: string, value: string): void {
  try {
    localStorage.setItem(key, value)
  } catch {
    /* private mode: keep it for this page only */
  }
}

function initialTheme(): Theme {
  const saved = read(THEME_KEY)
  if (saved === 'light' || saved === 'dark') return saved
  return typeof window !== 'undefined' && window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'
}

function initialLocale(): AppLocale {
  const saved = read(LOCALE_KEY)
  return SUPPORTED_LOCALES.includes(saved as AppLocale) ? (saved as AppLocale) : 'zh-CN'
}

/** Theme and language, persisted per browser; Element Plus' dark CSS variables follow `html.dark`. */
export const usePreferencesStore = defineStore('preferences', () => {
  const theme = ref<Theme>(initialTheme())
  const locale = ref<AppLocale>(initialLocale())

  function applyTheme(t: Theme): void {
    document.documentElement.classList.toggle('dark', t === 'dark')
  }
  function applyLocale(l: AppLocale): void {
    i18n.global.locale.value = l
    document.documentElement.setAttribute('lang', l)
  }

  watch(
    theme,
    (t) => {
      applyTheme(t)
      write(THEME_KEY, t)
    },
    { immediate: true },
  )
  watch(
    locale,
    (l) => {
      applyLocale(l)
      write(LOCALE_KEY, l)
    },
    { immediate: true },
  )

  function toggleTheme(): void {
    theme.value = theme.value === 'dark' ? 'light' : 'dark'
  }
  function setLocale(l: AppLocale): void {
    locale.value = l
  }

  return { theme, locale, toggleTheme, setLocale }
})
