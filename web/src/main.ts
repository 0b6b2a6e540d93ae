import { createApp } from 'vue'
import { createPinia } from 'pinia'
import ElementPlus from 'element-plus'
import * as Icons from '@element-plus/icons-vue'
import 'element-plus/dist/index.css'
import 'element-plus/theme-chalk/dark/css-vars.css'
import 'highlight.js/styles/github-dark.css'
import './styles/main.css'

import App from './App.vue'
import { i18n } from './locales'
import { buildRouter } from './router'
import { configureSession } from './api/session'
import { useAuthStore } from './stores/auth'
import { usePreferencesStore } from './stores/preferences'

const app = createApp(App)
const pinia = createPinia()
app.use(pinia)
app.use(i18n)
app.use(ElementPlus)
for (const [name, component] of Object.entries(Icons)) app.component(name, component)

const router = buildRouter()
const auth = useAuthStore()
usePreferencesStore()

configureSession({
  getAccessToken: () => auth.accessToken,
  onTokens: (answer) => auth.setSession(answer),
  onSessionLost: () => {
    auth.clear()
    const current = router.currentRoute.value
    // A session that expires mid-use goes to login and comes back to where it was.
    if (auth.booted && !current.meta.public) {
      void router.replace({ name: 'login', query: { redirect: current.fullPath } })
    }
  },
})

app.use(router)
app.mount('#app')
