import { computed, onBeforeUnmount, onMounted, ref } from 'vue'
import { useRoute, useRouter } from 'vue-router'
import { appRoutes } from '@/router'
import { useAuthStore } from '@/stores/auth'

type Area = 'models' | 'chat' | 'training' | 'system'
const AREAS: Area[] = ['models', 'chat', 'training', 'system']

export interface MenuEntry {
  path: string
  title: string
  icon: string
}

/** Side menu (grouped by the design's four areas, filtered by role), phone drawer, logout. */
export function useAppLayout() {
  const auth = useAuthStore()
  const route = useRoute()
  const router = useRouter()

  const isPhone = ref(false)
  const drawerOpen = ref(false)
  const collapsed = ref(false)
  let mq: MediaQueryList | null = null
  const onMq = () => {
    isPhone.value = !!mq?.matches
    if (!isPhone.value) drawerOpen.value = false
  }
  onMounted(() => {
    mq = window.matchMedia('(max-width: 768px)')
    onMq()
    mq.addEventListener('change', onMq)
  })
  onBeforeUnmount(() => mq?.removeEventListener('change', onMq))

  const groups = computed(() =>
    AREAS.map((area) => ({
      area,
      entries: appRoutes
        .filter((r) => r.meta?.area === area && !r.meta.hidden && (!r.meta.admin || auth.isAdmin))
        .map<MenuEntry>((r) => ({ path: `/${r.path}`, title: r.meta!.title!, icon: r.meta!.icon ?? 'Menu' })),
    })).filter((g) => g.entries.length > 0),
  )

  const active = computed(() => route.meta.activeMenu ?? route.path)

  function onSelect(): void {
    drawerOpen.value = false
  }

  function toggleMenu(): void {
    if (isPhone.value) drawerOpen.value = !drawerOpen.value
    else collapsed.value = !collapsed.value
  }

  async function logout(): Promise<void> {
    try {
      await auth.logout()
    } finally {
      await router.replace({ name: 'login' })
    }
  }

  return { auth, isPhone, drawerOpen, collapsed, groups, active, onSelect, toggleMenu, logout }
}
